/**
 * No token or secret ever reaches a log line: the REAL logger (pkg/observe/logger.ts) writing to a
 * stream, with secrets in the places an agent could put them: fields at any depth and in any case,
 * child bindings, error texts and the message itself.
 */
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../../pkg/observe/logger.ts';

function capture(): { log: ReturnType<typeof createLogger>; text: () => Promise<string> } {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => {
    text += d.toString('utf8');
  });
  const log = createLogger({ level: 'trace', destination: out, pretty: false });
  return { log, text: () => new Promise((r) => setImmediate(() => r(text))) };
}

const SECRET = 'eyJhbGciOiJSUzI1NiIsImtpZCI6InRybC1zZWNyZXQifQ';

describe('logger redaction (real pino logger)', () => {
  const shapes: [string, (log: ReturnType<typeof createLogger>) => void][] = [
    ['token field', (l) => l.info({ token: SECRET }, 'x')],
    ['nested token', (l) => l.info({ kube: { token: SECRET } }, 'x')],
    ['deeply nested token', (l) => l.info({ a: { b: { c: { token: SECRET } } } }, 'x')],
    ['headers.authorization', (l) => l.info({ headers: { authorization: `Bearer ${SECRET}` } }, 'x')],
    [
      'request headers two levels down',
      (l) => l.warn({ req: { headers: { authorization: `Bearer ${SECRET}` } } }, 'x'),
    ],
    ['Authorization in capitals', (l) => l.info({ Authorization: `Bearer ${SECRET}` }, 'x')],
    [
      'bearerToken / access_token / password',
      (l) => l.info({ bearerToken: SECRET, access_token: SECRET, password: SECRET }, 'x'),
    ],
    ['tokens inside an array', (l) => l.info({ users: [{ name: 'a', token: SECRET }] }, 'x')],
    [
      'Bearer inside an error text',
      (l) => l.error({ error: `GET /api/v1/nodes: 401, Authorization: Bearer ${SECRET}` }, 'x'),
    ],
    ['Bearer inside the message', (l) => l.warn(`request failed with Authorization: Bearer ${SECRET}`)],
    [
      'child logger bindings',
      (l) => l.child({ token: SECRET, kube: { authorization: `Bearer ${SECRET}` } }).info('x'),
    ],
    ['client-key-data of a kubeconfig', (l) => l.info({ user: { 'client-key-data': SECRET } }, 'x')],
    [
      "a server URL's userinfo",
      (l) => l.info({ server: `https://admin:${SECRET}@10.96.0.1:6443` }, 'kubernetes API client'),
    ],
    [
      "a URL's userinfo inside an error text",
      (l) => l.error({ error: `connect ECONNREFUSED for https://${SECRET}@api.example:6443/api` }, 'x'),
    ],
  ];

  it.each(shapes)('%s', async (_name, write) => {
    const { log, text } = capture();
    write(log);
    const out = await text();
    expect(out).not.toContain(SECRET);
    expect(out).toContain('[redacted]');
    for (const line of out.trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
  });

  it('keeps what is not a secret', async () => {
    const { log, text } = capture();
    const plain = {
      verb: 'ADD',
      containerId: 'abc',
      tokens: 3,
      note: 'Basic checks passed',
      server: 'https://10.96.0.1:443',
      contact: 'ops@example.com',
    };
    log.info(plain, 'CNI ADD ok');
    const line = JSON.parse(await text()) as Record<string, unknown>;
    expect(line).toMatchObject({ ...plain, msg: 'CNI ADD ok' });
  });

  it("keeps a URL's scheme, host and port when it takes its userinfo out", async () => {
    const { log, text } = capture();
    log.info({ server: 'https://admin:pw@10.96.0.1:6443/base' }, 'kubernetes API client');
    expect(JSON.parse(await text())).toMatchObject({ server: 'https://[redacted]@10.96.0.1:6443/base' });
  });

  it('a secret planted anywhere in an arbitrary object never appears', async () => {
    const key = fc.constantFrom(
      'token',
      'Token',
      'TOKEN',
      'authorization',
      'Authorization',
      'password',
      'bearer_token',
    );
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), {
          maxKeys: 4,
        }),
        fc.array(fc.string({ minLength: 1, maxLength: 8 }), { maxLength: 4 }),
        key,
        async (base, path, secretKey) => {
          const obj: Record<string, unknown> = structuredClone(base);
          let at = obj;
          for (const p of path) {
            const next: Record<string, unknown> = {};
            at[`k${p}`] = next;
            at = next;
          }
          at[secretKey] = SECRET;
          const { log, text } = capture();
          log.info(obj, 'planted');
          expect(await text()).not.toContain(SECRET);
        },
      ),
      { numRuns: 200 },
    );
  });
});
