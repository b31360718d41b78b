/** Texts that are not IP addresses (Go net.ParseIP rejects them too); shared by the pkg/ip and IPAM tests. */
export const NOT_IPS: readonly string[] = [
  '',
  '10.244.1',
  '10.244.1.256',
  '10.244.01.5',
  '10.244.1.5.6',
  ' 10.0.0.1',
  'fd00::1::2',
  '1:2:3:4:5:6:7:8:9',
  '1:2:3:4:5:6:7',
  '1:2:3:4:5:6:7::8',
  'fe80::1%eth0',
  'g::1',
  '12345::1',
  '1.2.3.4::',
  '::1.2.3',
  '1:2:3:4:5:6:7:1.2.3.4',
];

/** Texts that are not (strict) CIDRs, with the reason cidrProblem gives (IPAM's errors quote it). */
export const NOT_CIDRS: readonly (readonly [string, string])[] = [
  ['10.244.1.0', 'expected ADDRESS/PREFIX'],
  ['10.244.1.0/33', 'prefix must be 0-32'],
  ['fd00::/129', 'prefix must be 0-128'],
  ['10.244.1.0/024', 'prefix must be 0-32'],
  ['10.244.1.0/-1', 'prefix must be 0-32'],
  ['10.244.1.0/24/1', 'expected ADDRESS/PREFIX'],
  ['10.244.1.5/24', 'host bits are set (the network is 10.244.1.0/24)'],
  ['fd00:10:244:1::5/64', 'host bits are set (the network is fd00:10:244:1::/64)'],
  ['nope/24', 'bad address'],
];
