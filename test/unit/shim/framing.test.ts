import { describe, expect, it } from 'vitest';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';
import { LineReader } from '../../../pkg/shim/framing.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('LineReader', () => {
  it('returns the line once its newline arrives, ignoring bytes after it', () => {
    const r = new LineReader(100, CniCode.BAD_REQUEST, 'request');
    expect(r.push(enc('{"a":'))).toBeUndefined();
    expect(r.line).toBeUndefined();
    expect(r.push(enc('1}\n{"next":'))).toBe('{"a":1}');
    expect(r.line).toBe('{"a":1}');
    expect(r.push(enc('more\n'))).toBeUndefined();
    expect(r.line).toBe('{"a":1}');
  });

  it('decodes a multi-byte character split across chunks', () => {
    const bytes = enc('"🚀é"\n');
    const r = new LineReader(100, CniCode.BAD_REQUEST, 'request');
    for (let i = 0; i < bytes.length - 1; i++) expect(r.push(bytes.subarray(i, i + 1))).toBeUndefined();
    expect(r.push(bytes.subarray(bytes.length - 1))).toBe('"🚀é"');
  });

  it('copies chunks, so a sender reusing its buffer cannot change the line', () => {
    const buf = enc('abc');
    const r = new LineReader(100, CniCode.BAD_REQUEST, 'request');
    r.push(buf);
    buf.fill(0x7a);
    expect(r.push(enc('\n'))).toBe('abc');
  });

  it('throws the given code as soon as the line passes the byte limit, newline excluded', () => {
    const r = new LineReader(4, CniCode.INTERNAL, 'the agent answer');
    expect(r.push(enc('1234\n'))).toBe('1234');
    const r2 = new LineReader(4, CniCode.INTERNAL, 'the agent answer');
    r2.push(enc('12'));
    let thrown: unknown;
    try {
      r2.push(enc('345'));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(CniError);
    expect((thrown as CniError).code).toBe(CniCode.INTERNAL);
    expect((thrown as CniError).message).toBe('the agent answer exceeds 4 bytes');
  });

  it('gives what arrived when the peer closed without a newline', () => {
    const r = new LineReader(100, CniCode.BAD_REQUEST, 'request');
    r.push(enc('{"ok":true'));
    expect(r.partial()).toBe('{"ok":true');
    expect(r.size).toBe(10);
  });
});
