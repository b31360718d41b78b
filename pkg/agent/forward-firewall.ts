/**
 * Watches the host's own firewall for forward chains that drop this node's pod traffic (Docker's
 * FORWARD policy DROP, ufw's, firewalld's final reject): trellis's routes and rules are all in place
 * then, and pods still cannot reach other nodes, so the log must say where the packets die. The agent
 * reads the chains once it has its pod CIDRs and every --firewall-check-seconds (one `nft -j list chains`, and the rules of
 * the forward chains), logs a warning when what is blocked changes and a line when it clears, and
 * keeps the last verdict for `status` and `doctor`. It never writes other programs' tables.
 */

import { errorText } from '../error-text.ts';
import {
  acceptCommand,
  DOCKER_NOTE,
  describeBlock,
  type ForwardBlock,
  forwardBlocks,
} from '../firewall/index.ts';
import type { ForwardRuleset } from '../firewall/ruleset.ts';
import type { Logger } from '../observe/logger.ts';

export interface ForwardFirewallState {
  /** ISO 8601; absent until the first check finished. */
  checkedAt?: string;
  blocks: ForwardBlock[];
  /** Why the last read failed (the blocks are then the last known); absent when it worked. */
  error?: string;
}

export class ForwardFirewallWatch {
  private readonly read: (podCIDRs: readonly string[]) => Promise<ForwardRuleset>;
  private readonly log: Logger;
  private current: ForwardFirewallState = { blocks: [] };
  private reported = '[]';
  private running: Promise<void> | undefined;

  constructor(deps: { read: (podCIDRs: readonly string[]) => Promise<ForwardRuleset>; log: Logger }) {
    this.read = deps.read;
    this.log = deps.log;
  }

  state(): ForwardFirewallState {
    return this.current;
  }

  /** One check for these pod CIDRs; a check still running is awaited instead of a second one. */
  check(podCIDRs: readonly string[]): Promise<void> {
    if (podCIDRs.length === 0) return Promise.resolve();
    this.running ??= this.run(podCIDRs).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Never rejects: a failure is logged (once per distinct error) and kept in the state. */
  private async run(podCIDRs: readonly string[]): Promise<void> {
    let blocks: ForwardBlock[];
    try {
      blocks = forwardBlocks(await this.read(podCIDRs), podCIDRs);
    } catch (err) {
      const error = errorText(err);
      if (error !== this.current.error) {
        this.log.warn({ error }, "could not read the host firewall's forward chains; checked again later");
      }
      this.current = { ...this.current, error };
      return;
    }
    this.current = { checkedAt: new Date().toISOString(), blocks };
    const key = JSON.stringify(blocks);
    if (key === this.reported) return;
    this.reported = key;
    if (blocks.length === 0) {
      this.log.info('the host firewall no longer drops pod traffic this node forwards');
      return;
    }
    this.log.warn(
      {
        blocked: blocks.map(describeBlock),
        fix: [...new Set(blocks.map(acceptCommand))],
        note: DOCKER_NOTE,
      },
      "the host firewall drops pod traffic this node forwards: pods here cannot reach other nodes' pods or leave the node until it accepts the pod CIDRs",
    );
  }
}
