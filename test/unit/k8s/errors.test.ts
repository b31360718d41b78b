import { describe, expect, it } from 'vitest';
import { fromHttpResponse, fromStatus, retryAfterMsOf, toK8sError } from '../../../pkg/k8s/errors.ts';
import { K8sError } from '../../../pkg/k8s/index.ts';

/**
 * The shape of client-node's ApiException (code, body, headers). Only pkg/k8s may import
 * client-node; the real exception is exercised end to end in client.test.ts.
 */
class ApiException extends Error {
  readonly code: number;
  readonly body: unknown;
  constructor(code: number, message: string, body: unknown, _headers: Record<string, string>) {
    super(`HTTP-Code: ${code}\nMessage: ${message}\nBody: ${JSON.stringify(body)}`);
    this.code = code;
    this.body = body;
  }
}

describe('toK8sError', () => {
  it('reads status, reason and message from an ApiException with a Status body (string or object)', () => {
    const status = { kind: 'Status', code: 409, reason: 'Conflict', message: 'the object has been modified' };
    for (const body of [JSON.stringify(status), status]) {
      const e = toK8sError('patch node a', new ApiException(409, 'Conflict', body, {}));
      expect([e.statusCode, e.reason, e.message, e.isConflict]).toEqual([
        409,
        'Conflict',
        'patch node a: the object has been modified',
        true,
      ]);
    }
  });

  it('falls back to a reason derived from the code when the body is not a Status', () => {
    const e = toK8sError('get node a', new ApiException(503, 'Service Unavailable', '<html>', {}));
    expect([e.statusCode, e.reason]).toEqual([503, 'InternalError']);
  });

  it('reads the Watch class error (statusCode)', () => {
    const err = Object.assign(new Error('Gone'), { statusCode: 410 });
    expect(toK8sError('watch nodes', err).isGone).toBe(true);
  });

  it('maps network failures and DOMException timeouts to NetworkError without a status code', () => {
    const refused = new TypeError('fetch failed', {
      cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }),
    });
    const timeout = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    for (const err of [refused, timeout]) {
      const e = toK8sError('list nodes', err);
      expect([e.statusCode, e.reason]).toEqual([undefined, 'NetworkError']);
    }
    expect(toK8sError('x', refused).message).toBe('x: fetch failed (ECONNREFUSED)');
  });

  it('keeps a K8sError as it is and wraps anything else as Unknown', () => {
    const k = new K8sError('op', 'm', 404, 'NotFound');
    expect(toK8sError('other', k)).toBe(k);
    expect(toK8sError('op', 'a string').reason).toBe('Unknown');
    expect(toK8sError('op', new RangeError('bug')).reason).toBe('Unknown');
  });
});

describe('Retry-After', () => {
  it.each([
    ['the header', '3', undefined, 3000],
    ['the header, padded', ' 1 ', undefined, 1000],
    ['the Status details when there is no header', undefined, { details: { retryAfterSeconds: 5 } }, 5000],
    ['the header before the details', '2', { details: { retryAfterSeconds: 5 } }, 2000],
    ['nothing from an HTTP-date', 'Wed, 21 Oct 2015 07:28:00 GMT', undefined, undefined],
    ['nothing from zero', '0', { details: { retryAfterSeconds: 0 } }, undefined],
    ['nothing from a fraction', '1.5', undefined, undefined],
    ['nothing from what is not delay-seconds (RFC 9110: digits only)', '1e2', undefined, undefined],
    ['the Status details when the header is hex', '0x10', { details: { retryAfterSeconds: 4 } }, 4000],
    ['nothing from a signed number', '+3', undefined, undefined],
    ['nothing at all', undefined, undefined, undefined],
  ])('takes %s', (_what, header, status, expected) => {
    expect(retryAfterMsOf(header, status)).toBe(expected);
  });

  it('reaches K8sError from a response, a watch ERROR Status and a client-node ApiException', () => {
    const body = JSON.stringify({
      kind: 'Status',
      code: 429,
      reason: 'TooManyRequests',
      message: 'slow down',
    });
    expect(fromHttpResponse('list nodes', 429, body, '4').retryAfterMs).toBe(4000);
    expect(fromStatus('watch nodes', { code: 429, details: { retryAfterSeconds: 1 } }).retryAfterMs).toBe(
      1000,
    );
    const apiException = { code: 429, body, headers: { 'Retry-After': '6' }, message: 'HTTP-Code: 429' };
    expect(toK8sError('list nodes', apiException).retryAfterMs).toBe(6000);
    expect(fromHttpResponse('list nodes', 500, 'boom').retryAfterMs).toBeUndefined();
  });
});
