/**
 * Address blocks no pod network can use: a pod CIDR that overlaps one would hand pods loopback,
 * link-local, multicast or "this network" addresses (and its blackhole route would swallow them),
 * or, at /0, every address there is. RFC 6890's special-purpose blocks that are not unicast space a
 * node can route; 240.0.0.0/4 is left alone (some clusters give pods that "class E" space).
 */
import { type Cidr, cidrsOverlap, parseCidr } from './cidr.ts';

const SPECIAL: readonly { text: string; what: string; cidr: Cidr }[] = [
  { text: '0.0.0.0/8', what: '"this network"' },
  { text: '127.0.0.0/8', what: 'loopback' },
  { text: '169.254.0.0/16', what: 'link-local' },
  { text: '224.0.0.0/4', what: 'multicast' },
  { text: '255.255.255.255/32', what: 'broadcast' },
  { text: '::/127', what: 'unspecified and loopback' },
  { text: '::ffff:0:0/96', what: 'IPv4-mapped' },
  { text: 'fe80::/10', what: 'link-local' },
  { text: 'ff00::/8', what: 'multicast' },
].map((s) => ({ ...s, cidr: parseCidr(s.text)! }));

/** Why `cidr` (written `text`) cannot be a pod CIDR, or undefined when it can. */
export function specialRangeProblem(cidr: Cidr, text: string): string | undefined {
  const hit = SPECIAL.find((s) => cidrsOverlap(s.cidr, cidr));
  if (hit === undefined) return undefined;
  return `${text} overlaps ${hit.what} space (${hit.text}): pods need unicast addresses a node can route`;
}
