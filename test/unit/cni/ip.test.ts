import { describe, expect, it } from 'vitest';
import { ipFamily, parseCidr, parseIp } from '../../../pkg/cni/ip.ts';

describe('parseIp (Go net.ParseIP rules)', () => {
  const valid: [string, number[]][] = [
    ['10.0.0.5', [10, 0, 0, 5]],
    ['0.0.0.0', [0, 0, 0, 0]],
    ['255.255.255.255', [255, 255, 255, 255]],
    ['::', new Array(16).fill(0)],
    ['::1', [...new Array(15).fill(0), 1]],
    ['fd00::5', [0xfd, 0, ...new Array(13).fill(0), 5]],
    ['2001:db8:0:0:0:0:0:1', [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]],
    ['::ffff:10.1.2.3', [...new Array(10).fill(0), 0xff, 0xff, 10, 1, 2, 3]],
    ['1::', [0, 1, ...new Array(14).fill(0)]],
    ['1:2:3:4:5:6:7::', [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0]],
  ];
  for (const [text, bytes] of valid) {
    it(`parses ${text}`, () => expect([...(parseIp(text) ?? [])]).toEqual(bytes));
  }
  const invalid = [
    '',
    '10.0.0',
    '10.0.0.256',
    '010.0.0.1',
    '10.0.0.1 ',
    '1.2.3.4.5',
    ':::',
    '1::2::3',
    ':1::',
    '1::2:',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '12345::',
    'fe80::1%eth0',
    '1.2.3.4::',
    '::1.2.3.4:5',
    '1:2:3:4:5:6:7:8::',
    'g::1',
  ];
  for (const text of invalid) {
    it(`rejects ${JSON.stringify(text)}`, () => expect(parseIp(text)).toBeUndefined());
  }

  it('reports IPv4-mapped IPv6 as family 4, as Go To4() does', () => {
    expect(ipFamily('10.0.0.1')).toBe('4');
    expect(ipFamily('::ffff:10.0.0.1')).toBe('4');
    expect(ipFamily('fd00::1')).toBe('6');
    expect(ipFamily('nope')).toBeUndefined();
  });
});

describe('parseCidr', () => {
  it('keeps the host bits and the prefix', () => {
    expect(parseCidr('10.1.0.5/16')).toMatchObject({ address: '10.1.0.5', prefixLen: 16 });
    expect(parseCidr('fd00::5/128')).toMatchObject({ address: 'fd00::5', prefixLen: 128 });
    expect(parseCidr('0.0.0.0/0')).toMatchObject({ prefixLen: 0 });
  });
  for (const bad of [
    '10.0.0.5',
    '10.0.0.5/33',
    'fd00::/129',
    '10.0.0.5/',
    '10.0.0.5/-1',
    '10.0.0.5/1a',
    '/24',
  ]) {
    it(`rejects ${JSON.stringify(bad)}`, () => expect(parseCidr(bad)).toBeUndefined());
  }
});
