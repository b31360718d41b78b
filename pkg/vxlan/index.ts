/** The VXLAN overlay: devices, VTEP MACs and annotations, neighbour and FDB entries (docs/overlay.md). */

export { vtepAnnotations, vtepMacsFromAnnotations } from './annotations.ts';
export {
  DEFAULT_VXLAN_PORT,
  DEFAULT_VXLAN_VNI,
  isVxlanDeviceName,
  VTEP_MAC_ANNOTATIONS,
  VXLAN_DEVICE_NAMES,
  VXLAN_OVERHEAD,
  vxlanDeviceName,
} from './constants.ts';
export {
  type DeviceSpec,
  type DeviceState,
  DeviceUnusableError,
  desiredDevices,
  ensureDevice,
  familiesNeedingWayOut,
  type VxlanSettings,
  type VxlanSysctls,
} from './device.ts';
export { desiredEntries, diffFdb, diffNeighbours, type EntryDiff, type OverlayEntries } from './entries.ts';
export { netlinkVxlanTool, type VxlanLinkTool, type VxlanParams } from './link-tool.ts';
export { parseVtepMac, vtepMac } from './mac.ts';
export { VxlanOverlay, type VxlanOverlayOptions } from './overlay.ts';
