export { chooseNext } from './allocator.ts';
export {
  type Cidr,
  canonicalIp,
  cidrSize,
  contains,
  type Family,
  familyName,
  formatCidr,
  formatIp,
  gatewayAddress,
  type IpAddress,
  isReserved,
  nthAddress,
  parseCidr,
  parseIp,
  parseRange,
  tryParseIp,
  usableBounds,
} from './cidr.ts';
export { type Ipam, openIpam } from './ipam.ts';
export type { Lease, LeasedAddress, LeaseKey, LeaseMeta, LoadReport, RangeUsage } from './types.ts';
