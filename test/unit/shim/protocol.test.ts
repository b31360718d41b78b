import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  errorResponse,
  MAX_REQUEST_BYTES,
  MAX_RESPONSE_BYTES,
  okResponse,
} from '../../../pkg/shim/protocol.ts';

const env = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: '/var/run/netns/cni-1',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=web',
  CNI_PATH: '/opt/cni/bin',
};

function codeOf(fn: () => unknown): number | string {
  try {
    fn();
    return 'no error';
  } catch (err) {
    return err instanceof CniError ? err.code : `not a CniError: ${String(err)}`;
  }
}

describe('request encoding', () => {
  it('is one JSON line in exactly the agreed shape', () => {
    const stdin = '{"cniVersion":"1.0.0",\n "name":"trellis"}\n';
    const line = encodeRequest(env, stdin);
    expect(line.endsWith('\n')).toBe(true);
    expect(line.slice(0, -1)).not.toContain('\n');
    expect(JSON.parse(line)).toEqual({ v: 1, env, stdin });
  });

  it('forwards only the CNI_* variables, never the rest of the environment', () => {
    const line = encodeRequest(
      { ...env, AWS_SECRET_ACCESS_KEY: 'hunter2', CNI_EXTRA: 'x', PATH: '/bin' },
      '{}',
    );
    expect(line).not.toContain('hunter2');
    expect(Object.keys(JSON.parse(line).env).sort()).toEqual(Object.keys(env).sort());
  });

  it('omits unset variables', () => {
    expect(JSON.parse(encodeRequest({ CNI_COMMAND: 'STATUS', CNI_IFNAME: undefined }, '{}')).env).toEqual({
      CNI_COMMAND: 'STATUS',
    });
  });

  it('round-trips through decodeRequest, with or without the newline', () => {
    const stdin = '{"name":"ünïcødé ✓ 🚀"}';
    const line = encodeRequest(env, stdin);
    expect(decodeRequest(line)).toEqual({ v: 1, env, stdin });
    expect(decodeRequest(line.trimEnd())).toEqual({ v: 1, env, stdin });
  });

  it('refuses a request over MAX_REQUEST_BYTES with BAD_REQUEST, counting UTF-8 bytes', () => {
    // 3 bytes per character: fits in characters, not in bytes.
    const big = '€'.repeat(Math.ceil(MAX_REQUEST_BYTES / 3) + 10);
    expect(big.length).toBeLessThan(MAX_REQUEST_BYTES);
    expect(codeOf(() => encodeRequest(env, big))).toBe(CniCode.BAD_REQUEST);
    expect(() => encodeRequest(env, big)).toThrow(/too large.*limit 1048576/);
    expect(codeOf(() => encodeRequest(env, 'x'.repeat(MAX_REQUEST_BYTES - 300)))).toBe('no error');
  });

  it('says why a config under 1 MiB can make a line over it: its quotes double as a JSON string', () => {
    // A prevResult's long list, say: two quotes in every four bytes.
    const config = JSON.stringify({ list: Array.from({ length: 200_000 }, () => 'a') });
    expect(config.length).toBeLessThan(MAX_REQUEST_BYTES);
    const err = (() => {
      try {
        encodeRequest(env, config);
      } catch (e) {
        return e as CniError;
      }
      return undefined;
    })();
    expect(err?.code).toBe(CniCode.BAD_REQUEST);
    expect(err?.details).toBe(
      `the request carries the network configuration on stdin (with prevResult; ${config.length} bytes) escaped as a JSON string, beside the CNI_* variables: keep the configuration well under 1 MiB`,
    );
  });
});

describe('request decoding rejects malformed lines with BAD_REQUEST', () => {
  const cases: [string, string, RegExp][] = [
    ['not JSON', '{"v":1,', /not valid JSON/],
    ['an array', '[1]', /expected a JSON object/],
    ['wrong version', '{"v":2,"env":{},"stdin":""}', /unsupported protocol version 2/],
    ['missing env', '{"v":1,"stdin":""}', /"env" must be an object/],
    ['a foreign variable', '{"v":1,"env":{"HOME":"/root"},"stdin":""}', /"HOME", not a CNI variable/],
    [
      'a non-string variable',
      '{"v":1,"env":{"CNI_COMMAND":1},"stdin":""}',
      /env.CNI_COMMAND" must be a string/,
    ],
    ['missing stdin', '{"v":1,"env":{}}', /"stdin" must be a string/],
    [
      'an oversized line',
      `{"v":1,"env":{},"stdin":"${'a'.repeat(MAX_REQUEST_BYTES)}"}`,
      /exceeds the 1048576-byte/,
    ],
  ];
  for (const [name, line, msg] of cases) {
    it(name, () => {
      expect(codeOf(() => decodeRequest(line))).toBe(CniCode.BAD_REQUEST);
      expect(() => decodeRequest(line)).toThrow(msg);
    });
  }
});

describe('responses', () => {
  it('round-trip success and error answers', () => {
    const result = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.0.0.2/24' }] };
    const ok = encodeResponse(okResponse(result));
    expect(ok).toBe(`{"ok":true,"result":${JSON.stringify(result)}}\n`);
    expect(decodeResponse(ok)).toEqual({ ok: true, result });

    const err = encodeResponse(
      errorResponse(new CniError(CniCode.IPAM_EXHAUSTED, 'pool empty', '10.0.0.0/24')),
    );
    expect(JSON.parse(err)).toEqual({
      ok: false,
      error: { code: 101, msg: 'pool empty', details: '10.0.0.0/24' },
    });
    expect(decodeResponse(err)).toEqual({
      ok: false,
      error: { code: 101, msg: 'pool empty', details: '10.0.0.0/24' },
    });
  });

  it('turns untyped failures into INTERNAL exactly once, in errorResponse', () => {
    const r = errorResponse(new Error('boom'));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.code).toBe(CniCode.INTERNAL);
      expect(r.error.msg).toBe('boom');
    }
  });

  it('replaces a result too large to send by an INTERNAL error that fits', () => {
    const line = encodeResponse(okResponse({ blob: 'x'.repeat(MAX_RESPONSE_BYTES) }));
    expect(line.length).toBeLessThan(200);
    const decoded = decodeResponse(line);
    expect(decoded).toMatchObject({ ok: false, error: { code: CniCode.INTERNAL } });
  });

  const bad: [string, string, RegExp][] = [
    ['empty', '', /empty answer/],
    ['not JSON', '{"ok":tru', /not valid JSON/],
    ['ok not boolean', '{"ok":"yes"}', /"ok" must be true or false/],
    ['missing result', '{"ok":true}', /"result" is missing/],
    ['error not object', '{"ok":false,"error":"x"}', /"error" must be an object/],
    ['code not integer', '{"ok":false,"error":{"code":1.5,"msg":"m"}}', /positive integer/],
    ['msg missing', '{"ok":false,"error":{"code":7}}', /"error.msg" must be a string/],
    ['details not string', '{"ok":false,"error":{"code":7,"msg":"m","details":1}}', /"error.details"/],
  ];
  for (const [name, text, msg] of bad) {
    it(`rejects an answer that is ${name} as INTERNAL`, () => {
      expect(codeOf(() => decodeResponse(text))).toBe(CniCode.INTERNAL);
      expect(() => decodeResponse(text)).toThrow(msg);
    });
  }
});

describe('fuzz: decoders only ever throw CniError', () => {
  const anyText = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.json(),
    fc.jsonValue().map((v) => JSON.stringify(v)),
    fc
      .record(
        {
          v: fc.oneof(fc.constant(1), fc.jsonValue()),
          env: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), fc.jsonValue()),
          stdin: fc.jsonValue(),
          ok: fc.jsonValue(),
          result: fc.jsonValue(),
          error: fc.oneof(
            fc.record(
              { code: fc.jsonValue(), msg: fc.jsonValue(), details: fc.jsonValue() },
              { requiredKeys: [] },
            ),
            fc.jsonValue(),
          ),
        },
        { requiredKeys: [] },
      )
      .map((o) => JSON.stringify(o)),
  );

  it('decodeRequest', () => {
    fc.assert(
      fc.property(anyText, (text) => {
        try {
          const r = decodeRequest(text);
          expect(r.v).toBe(1);
        } catch (err) {
          expect(err).toBeInstanceOf(CniError);
          expect((err as CniError).code).toBe(CniCode.BAD_REQUEST);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('decodeResponse', () => {
    fc.assert(
      fc.property(anyText, (text) => {
        try {
          const r = decodeResponse(text);
          expect(typeof r.ok).toBe('boolean');
        } catch (err) {
          expect(err).toBeInstanceOf(CniError);
          expect((err as CniError).code).toBe(CniCode.INTERNAL);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('any CNI env and stdin round-trip', () => {
    const envArb = fc.record(
      {
        CNI_COMMAND: fc.string(),
        CNI_CONTAINERID: fc.string(),
        CNI_NETNS: fc.string(),
        CNI_IFNAME: fc.string(),
        CNI_ARGS: fc.string(),
        CNI_PATH: fc.string(),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(envArb, fc.string({ unit: 'binary', maxLength: 200 }), (e, stdin) => {
        expect(decodeRequest(encodeRequest(e, stdin))).toEqual({ v: 1, env: e, stdin });
      }),
    );
  });
});
