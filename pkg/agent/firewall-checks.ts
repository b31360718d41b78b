import type { NetlinkEventsPort, Subscription } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import type { Logger } from '../observe/logger.ts';
import { FirewallTableTrigger } from './firewall-tables.ts';
import { type ForwardFirewallDeps, ForwardFirewallWatch, type NftTableId } from './forward-firewall.ts';

export interface FirewallChecksDeps extends Omit<ForwardFirewallDeps, 'onTables' | 'log'> {
  events: NetlinkEventsPort;
  /** Runs a check (with the pod CIDRs as they are then). */
  check(): Promise<void>;
  log: Logger;
}

/**
 * The host firewall's forward chains, watched: a check soon after a table that dropped pod traffic
 * changes (firewall-tables.ts), where the kernel lets us watch it. The caller runs the first check
 * when the pod CIDRs are known, and the periodic ones.
 */
export function startFirewallChecks(d: FirewallChecksDeps): {
  watch: ForwardFirewallWatch;
  subscription: Subscription;
} {
  const { events, check, log, ...options } = d;
  let trigger: FirewallTableTrigger | undefined;
  if (events.subscribeNftablesEvents !== undefined) {
    const subscribe = events.subscribeNftablesEvents.bind(events);
    trigger = new FirewallTableTrigger({
      subscribe: (cb, table) => {
        try {
          return subscribe(cb, table);
        } catch (err) {
          // The periodic check still runs; the next check's follow tries again.
          log.debug({ table: table.name, error: errorText(err) }, 'cannot watch a firewall table');
          return undefined;
        }
      },
      onChange: () => void check(),
    });
  }
  const tables = trigger;
  const watch = new ForwardFirewallWatch({
    ...options,
    ...(tables === undefined ? {} : { onTables: (t: NftTableId[]) => tables.follow(t) }),
    log,
  });
  return { watch, subscription: { close: () => tables?.close() } };
}
