/** Small helpers shared by the pkg/k8s and test API server tests. */
import type { Server } from 'node:http';
import { expect } from 'vitest';
import { K8sError } from '../../../pkg/k8s/index.ts';
import type { JsonObject } from '../../support/apiserver/patch.ts';

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function nodeObject(
  name: string,
  opts: {
    podCIDRs?: string[];
    ips?: string[];
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
  } = {},
): JsonObject {
  const metadata: JsonObject = { name };
  if (opts.annotations) metadata.annotations = opts.annotations;
  if (opts.labels) metadata.labels = opts.labels;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata,
    spec: opts.podCIDRs ? { podCIDRs: opts.podCIDRs } : {},
    status: {
      addresses: [
        ...(opts.ips ?? []).map((address) => ({ type: 'InternalIP', address })),
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
    },
  };
}

export function podObject(
  namespace: string,
  name: string,
  nodeName: string | undefined,
  podIP?: string,
): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace },
    spec: { ...(nodeName ? { nodeName } : {}), containers: [{ name: 'c', image: 'pause' }] },
    status: podIP ? { phase: 'Running', podIP, podIPs: [{ ip: podIP }] } : { phase: 'Pending' },
  };
}

export async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<{ status: number; json: JsonObject }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? {} : (JSON.parse(text) as JsonObject) };
}

/** Opens a watch with fetch and collects its events until `until` says stop or the stream ends. */
export async function collectWatch(
  url: string,
  until: (events: { type: string; object: JsonObject }[]) => boolean,
  timeoutMs = 5000,
  onOpen?: () => void,
): Promise<{ events: { type: string; object: JsonObject }[]; ended: boolean }> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const events: { type: string; object: JsonObject }[] = [];
  let ended = false;
  try {
    const res = await fetch(url, { signal: ac.signal });
    if (res.status !== 200 || res.body === null) throw new Error(`watch answered ${res.status}`);
    onOpen?.();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    while (!until(events)) {
      const { done, value } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      buf += decoder.decode(value, { stream: true });
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        events.push(JSON.parse(buf.slice(0, nl)) as { type: string; object: JsonObject });
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
    }
  } catch (err) {
    if (!ac.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return { events, ended };
}

/** The K8sError a promise rejects with (the test fails if it resolves or rejects with anything else). */
export async function rejection(p: Promise<unknown>): Promise<K8sError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(K8sError);
    return err as K8sError;
  }
  throw new Error('expected a rejection');
}

/** The InvalidKubeconfig K8sError `fn` throws. */
export function configError(fn: () => unknown): K8sError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(K8sError);
    expect((err as K8sError).reason).toBe('InvalidKubeconfig');
    return err as K8sError;
  }
  throw new Error('expected an error');
}

/** Closes a raw node:http server a test stood in for the API server with, its open connections too. */
export async function closeRawServer(raw: Server | undefined): Promise<void> {
  if (raw === undefined) return;
  raw.closeAllConnections();
  await new Promise<void>((r) => raw.close(() => r()));
}
