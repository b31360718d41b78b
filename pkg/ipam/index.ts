export { chooseNext } from './allocator.ts';
export {
  type Ipam,
  type IpamOptions,
  openIpam,
  type PendingLease,
  type PendingRelease,
  parseRanges,
  RangeChangeError,
  type RecordRepair,
  usableIn,
} from './ipam.ts';
export { validateKey } from './key.ts';
export {
  gatewayAddress,
  isReserved,
  parseCidrOrThrow,
  parseIpOrThrow,
  parseRange,
  type UsableBounds,
  usableBounds,
} from './range.ts';
export type { Lease, LeasedAddress, LeaseKey, LeaseMeta, LoadReport, RangeUsage } from './types.ts';
