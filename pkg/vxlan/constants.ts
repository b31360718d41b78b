/**
 * The VXLAN backend's fixed names and defaults, in one place because the agent, uninstall, the planner and
 * the docs (docs/overlay.md) must agree on them.
 */

import type { Family } from '../datapath/ports.ts';

/**
 * One device per underlay family. The names cannot be mistaken for pod veths (`trl` + 12 hex characters,
 * pkg/datapath/names.ts), so the veth garbage collector never touches them, and uninstall finds them.
 */
export const VXLAN_DEVICE_NAMES: Readonly<Record<Family, string>> = Object.freeze({
  4: 'trellis.v4',
  6: 'trellis.v6',
});

export function vxlanDeviceName(family: Family): string {
  return VXLAN_DEVICE_NAMES[family];
}

/** True for the names of trellis VXLAN devices (uninstall's isTrellisDevice). */
export function isVxlanDeviceName(name: string): boolean {
  return name === VXLAN_DEVICE_NAMES[4] || name === VXLAN_DEVICE_NAMES[6];
}

/** Node annotations carrying the node's VTEP MAC per family; the VTEP's underlay address is its InternalIP. */
export const VTEP_MAC_ANNOTATIONS: Readonly<Record<Family, string>> = Object.freeze({
  4: 'trellis.dev/vtep-mac-v4',
  6: 'trellis.dev/vtep-mac-v6',
});

/**
 * VNI 4096, not flannel's 1: flannel also uses UDP 8472 by default, and a leftover `flannel.1` (VNI 1 on
 * 8472) would make creating a second device with the same VNI and port fail with EEXIST.
 */
export const DEFAULT_VXLAN_VNI = 4096;
/** The Linux kernel's historical VXLAN port, flannel's default; 4789 is the IANA port. */
export const DEFAULT_VXLAN_PORT = 8472;

/**
 * Bytes VXLAN adds to every pod packet: outer IP (20 / 40) + UDP (8) + VXLAN (8) + inner Ethernet (14).
 */
export const VXLAN_OVERHEAD: Readonly<Record<Family, number>> = Object.freeze({ 4: 50, 6: 70 });
