import { ipv4Value } from './ip.ts';
import { u32be } from './wire.ts';

/**
 * The text of IPv4 addresses and prefixes read from the kernel, by value. Every resync dumps the same
 * thousands of destinations and gateways; formatting them anew each time was most of the garbage left
 * by a parse (a handful of intermediate strings per address). What trellis writes is remembered as it
 * is encoded, so that the dumps after a cold pass find the strings the desired state already holds
 * rather than keeping a second copy of each (without it the first resync at 5,000 nodes kept ~15,000
 * new strings, a step of ~1.8 MB in a steady agent's heap). Cleared when it grows past MAX_TEXTS, so
 * churn cannot grow it without bound.
 */
const texts = new Map<number, string>();
const MAX_TEXTS = 65_536;

function remember(key: number, text: string): string {
  if (texts.size >= MAX_TEXTS) texts.clear();
  texts.set(key, text);
  return text;
}

/** A prefix's key: above 2^32, apart from the addresses' (u32) keys. */
function prefixKey(prefixLen: number, address: number): number {
  return (prefixLen + 1) * 2 ** 32 + address;
}

/** "a.b.c.d" for the 4 bytes at off. */
export function ipv4TextAt(buf: Buffer, off: number): string {
  const v = u32be(buf, off);
  return texts.get(v) ?? remember(v, `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`);
}

/** "a.b.c.d/len" for the 4 bytes at off (the address alone is not remembered on the way). */
export function ipv4PrefixTextAt(buf: Buffer, off: number, prefixLen: number): string {
  const key = prefixKey(prefixLen, u32be(buf, off));
  return (
    texts.get(key) ??
    remember(key, `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}/${prefixLen}`)
  );
}

/**
 * An address about to be written: remembered when it is the text a dump would make of its bytes
 * (ipv4Value refuses leading zeros and anything but a dotted quad), so a dump never reads back a
 * spelling of the caller's.
 */
export function rememberIpv4Text(text: string): void {
  rememberIpv4Value(ipv4Value(text), text);
}

/** rememberIpv4Text for a caller that has ipv4Value(text) already (-1: not remembered). */
export function rememberIpv4Value(value: number, text: string): void {
  if (value >= 0) remember(value, text);
}

/** A prefix about to be written, as `text` ("a.b.c.d/len"), with its address and length parsed. */
export function rememberIpv4PrefixText(text: string, address: string, prefixLen: number): void {
  const v = ipv4Value(address);
  // "/24", not "/024": the length's digits are the only other way the text could differ.
  const canonical = text.length === address.length + (prefixLen < 10 ? 2 : 3);
  if (v >= 0 && canonical) remember(prefixKey(prefixLen, v), text);
}
