/** IPv4/IPv6 addresses and CIDR blocks as bigints: the one pure IP library of the agent. */

export {
  canonicalIp,
  type Family,
  familyBits,
  familyName,
  familyOfText,
  formatIp,
  type IpAddress,
  parseIp,
} from './address.ts';
export {
  type Cidr,
  canonicalCidr,
  cidrContains,
  cidrHolds,
  cidrLast,
  cidrProblem,
  cidrRange,
  cidrSize,
  cidrsOverlap,
  compareCidr,
  formatCidr,
  nthAddress,
  type ParseCidrOptions,
  parseCidr,
} from './cidr.ts';
export { localUnicastMac } from './mac.ts';
export { specialRangeProblem } from './special-ranges.ts';
