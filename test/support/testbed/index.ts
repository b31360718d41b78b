/** The multi-node test bed: see testbed.ts for the topology and docs/demo.md for a tour. */
import { builtSkipReason } from '../cni-driver.ts';
import { netnsSkipReason } from '../netns.ts';

export { ApiRequestError, UnixApiClient } from './api.ts';
export { FaultAdminClient, type OutageMode, type RequestLogEntry } from './fault-admin.ts';
export { backgroundPing, monitorRoutes, type PingCount } from './observe.ts';
export * from './plan.ts';
export * from './report.ts';
export {
  type AgentMode,
  type DatapathMode,
  type EchoAnswer,
  type EchoServer,
  POD_NAMESPACE,
  Testbed,
  type TestbedNode,
  type TestbedOptions,
  type TestbedPod,
} from './testbed.ts';

/** Why a multi-node test bed cannot run here (not root, or dist/ not built), or undefined. */
export function testbedSkipReason(): string | undefined {
  return netnsSkipReason ?? builtSkipReason();
}
