import { describe, expect, it } from 'vitest';
import { parseIp } from '../../../pkg/ip/index.ts';
import { isUnusableNodeIp } from '../../../pkg/routes/node-ip.ts';

describe('isUnusableNodeIp', () => {
  it('flags special-purpose addresses', () => {
    for (const s of ['127.0.0.1', '0.0.0.0', '169.254.1.1', '224.0.0.1', '::1', '::', 'fe80::1', 'ff02::1']) {
      expect(isUnusableNodeIp(parseIp(s)!), s).toBeDefined();
    }
    for (const s of ['10.0.0.1', '192.168.1.1', 'fd00::1', '2001:db8::1']) {
      expect(isUnusableNodeIp(parseIp(s)!), s).toBeUndefined();
    }
  });
});
