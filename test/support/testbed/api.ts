import { request } from 'node:http';

/**
 * A minimal Kubernetes REST client over the control plane's unix socket (see control-plane.ts): the
 * test bed runs in the root namespace and cannot reach the fabric address, so it talks through the
 * forwarder. Plain JSON in and out; a non-2xx answer throws ApiRequestError with the Status body.
 */
export class ApiRequestError extends Error {
  readonly status: number;
  readonly body: string;

  constructor(method: string, path: string, status: number, body: string) {
    super(`${method} ${path} -> ${status}: ${body.slice(0, 300)}`);
    this.name = 'ApiRequestError';
    this.status = status;
    this.body = body;
  }
}

export class UnixApiClient {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  call<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          // One connection per call: no idle keep-alive sockets holding the control plane open.
          agent: false,
          method,
          path,
          headers: {
            accept: 'application/json',
            ...(payload === undefined
              ? {}
              : { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) }),
          },
          timeout: 10_000,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            text += d;
          });
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            if (status < 200 || status > 299) {
              reject(new ApiRequestError(method, path, status, text));
              return;
            }
            try {
              resolve(JSON.parse(text) as T);
            } catch (err) {
              reject(err);
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  createNode(node: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.call('POST', '/api/v1/nodes', node);
  }

  getNode(name: string): Promise<Record<string, unknown>> {
    return this.call('GET', `/api/v1/nodes/${encodeURIComponent(name)}`);
  }

  deleteNode(name: string): Promise<Record<string, unknown>> {
    return this.call('DELETE', `/api/v1/nodes/${encodeURIComponent(name)}`);
  }

  /** A strategic merge patch of the Node's status subresource (conditions merge by type), as a controller sends. */
  patchNodeStatus(name: string, status: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.call(
      'PATCH',
      `/api/v1/nodes/${encodeURIComponent(name)}/status`,
      { status },
      'application/strategic-merge-patch+json',
    );
  }

  createPod(namespace: string, pod: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.call('POST', `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`, pod);
  }

  /** A merge patch of the Pod's status subresource (what a kubelet reports). */
  patchPodStatus(
    namespace: string,
    name: string,
    status: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    return this.call(
      'PATCH',
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}/status`,
      { status },
      'application/merge-patch+json',
    );
  }

  deletePod(namespace: string, name: string): Promise<Record<string, unknown>> {
    return this.call(
      'DELETE',
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
    );
  }

  async listNodeNames(): Promise<string[]> {
    const list = await this.call<{ items: { metadata: { name: string } }[] }>('GET', '/api/v1/nodes');
    return list.items.map((n) => n.metadata.name);
  }
}
