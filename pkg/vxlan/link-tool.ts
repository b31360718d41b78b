/**
 * The two device operations the VXLAN backend needs beyond the netlink port's required ones: read a
 * VXLAN device's parameters (IFLA_INFO_DATA) and set a link's MAC (IFLA_ADDRESS). Both are netlink
 * requests of the handle's (no `ip` process); the interface of their own lets tests wrap them (a
 * check that throws, a MAC setter that records).
 */
import type { NetlinkHandle, VxlanParams } from '../datapath/ports.ts';

export type { VxlanParams };

export interface VxlanLinkTool {
  /** The device's VXLAN parameters; undefined when it does not exist, null when it is not a VXLAN device. */
  vxlanParams(name: string): Promise<VxlanParams | undefined | null>;
  setMac(index: number, mac: string): Promise<void>;
}

/** The tool over a netlink handle that has the VXLAN backend's optional operations. */
export function netlinkVxlanTool(handle: NetlinkHandle): VxlanLinkTool {
  const { vxlanParams, setLinkMac } = handle;
  if (vxlanParams === undefined || setLinkMac === undefined) {
    throw new Error('this netlink handle cannot read VXLAN devices or set a MAC');
  }
  return {
    vxlanParams: (name) => vxlanParams.call(handle, name),
    setMac: (index, mac) => setLinkMac.call(handle, index, mac),
  };
}
