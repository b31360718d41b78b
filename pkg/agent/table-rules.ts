/**
 * What the agent's nftables table holds on this node. Pure: the mode and flags in, the parts out.
 */

import { VXLAN_DEVICE_NAMES } from '../vxlan/constants.ts';
import type { AgentConfig } from './config.ts';

export interface TableRules {
  /** Masquerade pod traffic leaving the cluster (off with --no-masquerade). */
  masquerade: boolean;
  /** Devices whose forwarded TCP SYNs get the MSS of the route's MTU: the VXLAN devices. */
  clampMssInto: readonly string[];
  /** The VXLAN devices, where the node's own addresses are masqueraded to the pod network (with masquerade). */
  tunnels: readonly string[];
  /** Pods' packets must carry their own address (off with --no-source-check). */
  sourceCheck: boolean;
}

/**
 * Every mode that may tunnel clamps: in auto mode pods keep the full MTU on their routes off the node
 * (mtu.ts encapOverhead), and pods started under auto keep those routes after a switch to vxlan. A
 * standalone agent has no peers and no VXLAN device; host-gw never tunnels.
 */
export function tableRules(
  config: Pick<AgentConfig, 'masquerade' | 'mode'> & Partial<Pick<AgentConfig, 'sourceCheck'>>,
  standalone: boolean,
): TableRules {
  const tunnels = !standalone && config.mode !== 'host-gw';
  const devices = tunnels ? [VXLAN_DEVICE_NAMES[4], VXLAN_DEVICE_NAMES[6]] : [];
  return {
    masquerade: config.masquerade,
    clampMssInto: devices,
    tunnels: devices,
    sourceCheck: config.sourceCheck !== false,
  };
}

/** Whether the node needs the table at all; without it, a table an earlier run left is removed. */
export function needsTable(rules: TableRules): boolean {
  return rules.masquerade || rules.clampMssInto.length > 0 || rules.sourceCheck;
}
