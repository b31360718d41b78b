/**
 * Watches the host's own firewall for forward chains that drop this node's pod traffic (Docker's
 * FORWARD policy DROP, ufw's, firewalld's final reject): trellis's routes and rules are all in place
 * then, and pods still cannot reach other nodes. The agent reads the chains after its first full
 * pass, when the prefixes below change, every --firewall-check-seconds, and soon after a table that
 * dropped pod traffic changes (onTables, firewall-tables.ts): one `nft -j list chains`, and the rules
 * of the forward chains.
 *
 * With `write` (the default; --no-accept-forward leaves it out) it does what flannel and Calico do:
 * inserts one accept per blocked prefix and direction, before the catch-all rule or at the end of
 * the policy that drops (pkg/firewall/accept.ts), reads again, and logs what it inserted and anything
 * still dropped; accepts of a prefix no longer asked for are deleted. The prefixes are the caller's
 * (forward-prefixes.ts): the cluster's pod network per family, which a NodePort connection DNATed
 * here to another node's pod needs; where one prefix would reach beyond the pods, the pod CIDRs one by
 * one, or this node's own.
 * A rule that names the pods (their addresses, their veths) is the operator's: reported, never
 * overridden. Without it, it logs the chains and the commands that would let the pods through.
 * Either way it logs when what is blocked changes, not at every check, and keeps the last verdict for
 * `status`, `doctor` and the metrics.
 * With the VXLAN packets of the peers this node tunnels to (deps.vxlan), it also walks the input
 * chains for them (pkg/firewall/vxlan-input.ts) and reports a drop there; that it never fixes.
 */
import { errorText } from '../error-text.ts';
import {
  acceptCommand,
  commandText,
  DOCKER_NOTE,
  deleteCommand,
  describeBlock,
  describeRule,
  describeVxlanBlock,
  distinctAccepts,
  type FirewallCommand,
  type ForwardBlock,
  fixCommand,
  forwardBlocks,
  ownAccepts,
  planAccepts,
  type RuleAt,
  rulesWithChains,
  undecidedChains,
  VXLAN_NOTE,
  type VxlanInBlock,
  type VxlanInKind,
  vxlanFixCommand,
  vxlanInputBlocks,
} from '../firewall/index.ts';
import {
  type ChainRef,
  chainKey,
  chainOfKey,
  describeUnread,
  type ForwardRuleset,
  type Rule,
  tableKey,
  type UnreadTable,
} from '../firewall/ruleset.ts';
import { canonicalCidr } from '../ip/index.ts';
import type { Logger } from '../observe/logger.ts';
import { carryUnread } from './unread-tables.ts';

export interface ForwardFirewallState {
  /** ISO 8601; absent until the first check finished. */
  checkedAt?: string;
  /** What still drops pod traffic after the check (and after trellis's accepts, when it inserts them). */
  blocks: ForwardBlock[];
  /** Input chains that drop the VXLAN packets of the nodes this node tunnels to (reported, never fixed). */
  vxlanBlocks?: VxlanInBlock[];
  /**
   * Forward chains whose fate for the pods' packets the check cannot tell (a rule it cannot read):
   * neither reported as dropping nor known to let them through. Absent when none.
   */
  undecided?: string[];
  /** Why the last read failed (the blocks are then the last known); absent when it worked. */
  error?: string;
  /**
   * Legacy iptables tables the last check could not read, with why (describeUnread says them): their
   * blocks are those of the last check that read them, and trellis writes nothing there meanwhile.
   * Absent when every table was read.
   */
  unreadTables?: UnreadTable[];
  /** The agent does not look (--firewall-check-seconds 0). */
  off?: true;
  /**
   * Accepts trellis inserted in an earlier run that are still there while this one inserts none
   * (--no-accept-forward): what they let through is counted as let through, and they are left alone
   * (the operator's to delete). Absent when none, or when the agent inserts accepts itself.
   */
  earlierAccepts?: string[];
  /** The commands that remove them, in the same order. */
  earlierRemove?: string[];
  /**
   * What the host firewall would drop without them: let through only by rules this run does not put
   * back after a firewall reload. Absent when nothing.
   */
  hiddenBlocks?: ForwardBlock[];
}

/** An nftables table by its name and its family's NFPROTO number (as its notifications carry them). */
export interface NftTableId {
  family: number;
  name: string;
}

export interface ForwardFirewallDeps {
  /**
   * The forward chains, and the input chains too when VXLAN packets are asked about; `podCIDRs`: the
   * prefixes whose certain jumps it follows (the checked ones and this node's own).
   */
  read: (podCIDRs: readonly string[], vxlan: readonly VxlanInKind[]) => Promise<ForwardRuleset>;
  /** The VXLAN packets of the peers this node tunnels to, at check time; absent or []: none. */
  vxlan?: () => VxlanInKind[] | Promise<VxlanInKind[]>;
  /** Runs nft or legacy iptables (a rule inserted or deleted); absent: report only. */
  write?: (cmd: FirewallCommand) => Promise<unknown>;
  /**
   * After each check: the tables that dropped pod traffic or hold trellis's accepts. A change there
   * (Docker restarting, `ufw reload`, firewalld's reload) may take the accepts away before the next
   * periodic check; the agent watches them (firewall-tables.ts).
   */
  onTables?: (tables: NftTableId[]) => void;
  /**
   * This node's pod CIDRs: the prefixes checked may be the cluster's pod network, of which only these
   * pass this node's veths alone (an operator's `-o trl+ -j ACCEPT` does not cover the rest).
   */
  own?: () => readonly string[];
  log: Logger;
}

/** nf_tables' families; legacy iptables' tables send no nf_tables notifications (the periodic check reads them). */
const NFPROTO: Partial<Record<ChainRef['family'], number>> = { inet: 1, ip: 2, ip6: 10 };

export interface CheckOptions {
  /**
   * Delete no accept of ours, whatever prefix it matches: a check before the pod network is known
   * (no full pass yet: the API away at start) asks for this node's pod CIDRs only, and the last run's
   * wider accepts must stay.
   */
  keepOthers?: boolean;
}

export class ForwardFirewallWatch {
  private readonly deps: ForwardFirewallDeps;
  private current: ForwardFirewallState = { blocks: [] };
  private reported = '[]';
  private reportedVxlan = '[]';
  private reportedUnanswered = '';
  private reportedUndecided = '';
  private reportedUnread = '';
  private reportedEarlier = '';
  private stopped = false;
  private running: Promise<void> | undefined;
  /**
   * The check to run after the running one, and the prefixes it checks (the last asked for). Here
   * and below `podCIDRs` are the prefixes the accepts match (forward-prefixes.ts).
   */
  private rerun: Promise<void> | undefined;
  private rerunWith: { podCIDRs: readonly string[]; opts: CheckOptions } | undefined;

  constructor(deps: ForwardFirewallDeps) {
    this.deps = deps;
  }

  state(): ForwardFirewallState {
    return this.current;
  }

  /**
   * No write after the one under way (if any), which it resolves after: the agent stops, and releases
   * the locks `uninstall` waits on only then; a check may not insert after that.
   */
  stop(): Promise<void> {
    this.stopped = true;
    return this.running ?? Promise.resolve();
  }

  /**
   * One check for these pod CIDRs. Asked for while one runs, it runs once more after that one, with
   * the pod CIDRs of the last ask: the running check may have read its inputs (the pod CIDRs, the
   * tunnelled peers) before they changed, and the next periodic check is a minute away. Any number of
   * asks meanwhile share that one rerun.
   */
  check(podCIDRs: readonly string[], opts: CheckOptions = {}): Promise<void> {
    if (podCIDRs.length === 0 || this.stopped) return Promise.resolve();
    if (this.running === undefined) {
      this.running = this.run(podCIDRs, opts).finally(() => {
        this.running = undefined;
      });
      return this.running;
    }
    this.rerunWith = { podCIDRs, opts };
    this.rerun ??= this.running.then(() => {
      const next = this.rerunWith ?? { podCIDRs, opts };
      this.rerun = undefined;
      this.rerunWith = undefined;
      return this.check(next.podCIDRs, next.opts);
    });
    return this.rerun;
  }

  /** Never rejects: a failure is logged (once per distinct error) and kept in the state. */
  /**
   * The prefixes whose certain jumps the reader follows: the checked ones and this node's own, which
   * the walks of a wider prefix add (a jump only they take would be a chain never read: undecided).
   * The same list for every read of a check, so the read cache holds.
   */
  private readPrefixes(podCIDRs: readonly string[]): readonly string[] {
    const own = (this.deps.own?.() ?? []).filter((c) => !podCIDRs.includes(c));
    return own.length === 0 ? podCIDRs : [...podCIDRs, ...own];
  }

  private async run(podCIDRs: readonly string[], opts: CheckOptions): Promise<void> {
    let blocks: ForwardBlock[];
    let vxlanBlocks: VxlanInBlock[];
    let undecided: string[];
    let vxlan: VxlanInKind[] = [];
    let earlier: RuleAt[] = [];
    let earlierBlocks: ForwardBlock[] = [];
    let unread: UnreadTable[] = [];
    try {
      if (this.deps.vxlan !== undefined) vxlan = await this.deps.vxlan();
      // The reader follows the jumps the walks take: this node's own CIDRs' too, which the walks of a
      // wider prefix add (a jump only they take would be a chain never read: undecided).
      const rs = await this.deps.read(this.readPrefixes(podCIDRs), vxlan);
      const write = this.deps.write;
      // Our accepts of prefixes no longer asked for (the pod network grew or shrank) are judged as
      // gone already, and deleted only once the accepts that replace them are in: pod traffic never
      // waits between the two.
      const stale = write === undefined || opts.keepOthers === true ? [] : staleAccepts(rs, podCIDRs);
      const view = withoutRules(rs, stale);
      blocks = forwardBlocks(view, podCIDRs, this.deps.own?.());
      vxlanBlocks = vxlanInputBlocks(rs, vxlan);
      undecided = undecidedChains(view, podCIDRs, this.deps.own?.());
      this.deps.onTables?.(tablesOf(rs, blocks, vxlanBlocks));
      // The VXLAN input blocks are this read's; the forward blocks the re-read's after any accepts.
      const unreadInput = rs.unread ?? [];
      unread = unreadInput;
      const firstBlocks = blocks;
      // A drop that names the pods is the operator's: reported below, never lifted.
      let answered: ReadonlySet<string> = new Set();
      if (write !== undefined && blocks.some((b) => b.targeted !== true)) {
        const accepted = await this.accept(view, blocks, podCIDRs, write, stale);
        blocks = accepted.blocks;
        if (accepted.unread !== undefined) unread = accepted.unread;
        answered = accepted.answered ?? answered;
      } else if (write !== undefined) await this.dropStale(stale, write);
      earlier = write === undefined ? earlierAccepts(rs) : [];
      if (earlier.length > 0) {
        // Only what they hide: a drop the firewall makes with them in place is a block already.
        const dropped = new Set(blocks.map(describeBlock));
        earlierBlocks = forwardBlocks(withoutRules(rs, earlier), podCIDRs, this.deps.own?.()).filter(
          (b) => !dropped.has(describeBlock(b)),
        );
      }
      ({ blocks, vxlanBlocks, unread } = carryUnread({
        blocks,
        vxlanBlocks,
        unreadFirst: unreadInput,
        unreadLatest: unread,
        firstBlocks,
        answered,
        last: this.current,
        podCIDRs,
        own: this.readPrefixes(podCIDRs),
        vxlan,
      }));
    } catch (err) {
      const error = errorText(err);
      if (error !== this.current.error) {
        this.deps.log.warn(
          { error },
          "could not read the host firewall's forward chains; checked again later",
        );
      }
      this.current = { ...this.current, error };
      return;
    }
    this.current = {
      checkedAt: new Date().toISOString(),
      blocks,
      vxlanBlocks,
      ...(undecided.length === 0 ? {} : { undecided }),
      ...(unread.length === 0 ? {} : { unreadTables: unread }),
      ...(earlier.length === 0
        ? {}
        : {
            earlierAccepts: earlier.map(describeRule),
            earlierRemove: earlier.map((at) => commandText(deleteCommand(at))),
          }),
      ...(earlierBlocks.length === 0 ? {} : { hiddenBlocks: earlierBlocks }),
    };
    this.reportEarlier(earlier, earlierBlocks);
    this.reportUndecided(undecided);
    this.reportUnread(unread);
    this.reportVxlan(vxlanBlocks, vxlan);
    const key = JSON.stringify(blocks.map(describeBlock));
    if (key === this.reported) return;
    this.reported = key;
    if (blocks.length === 0) {
      this.deps.log.info('the host firewall no longer drops pod traffic this node forwards');
      return;
    }
    this.deps.log.warn(
      {
        blocked: blocks.map(describeBlock),
        fix: [...new Set(blocks.map(fixCommand))],
        // Docker's and the persistence advice is for the commands above, not an owned table's.
        ...(blocks.every((b) => b.owned === true) ? {} : { note: DOCKER_NOTE }),
      },
      "the host firewall drops pod traffic this node forwards: pods here cannot reach other nodes' pods or leave the node until it accepts the pod CIDRs",
    );
  }

  /** Logs when what drops the VXLAN packets of the tunnelled peers changes. Never fixed here. */
  private reportVxlan(blocks: readonly VxlanInBlock[], kinds: readonly VxlanInKind[]): void {
    const key = JSON.stringify(blocks.map(describeVxlanBlock));
    if (key === this.reportedVxlan) return;
    this.reportedVxlan = key;
    if (blocks.length === 0) {
      this.deps.log.info('the host firewall lets in the VXLAN packets of the nodes this node tunnels to');
      return;
    }
    const peers = Math.max(...kinds.map((k) => k.sources.length));
    this.deps.log.warn(
      {
        blocked: blocks.map(describeVxlanBlock),
        fix: [...new Set(blocks.map(vxlanFixCommand))],
        ...(blocks.every((b) => b.owned === true)
          ? {}
          : { note: VXLAN_NOTE.replaceAll('<port>', String(blocks[0]!.port)) }),
        peers,
      },
      'the host firewall drops the VXLAN packets of the nodes this node tunnels to: pods here and on those nodes cannot reach each other until it accepts their UDP port (trellis does not open it)',
    );
  }

  /**
   * Inserts the accepts, reads again; what still drops. A block that one of our accepts in the same
   * place already answers is not answered again: that accept is where the kernel never gets to (a
   * rule before it sends the packets elsewhere), and another one would not be either; it is reported
   * as ineffective, so the checks that follow every change of the table cannot stack rules up.
   */
  private async accept(
    rs: ForwardRuleset,
    blocks: ForwardBlock[],
    podCIDRs: readonly string[],
    write: (cmd: FirewallCommand) => Promise<unknown>,
    stale: readonly RuleAt[],
  ): Promise<{ blocks: ForwardBlock[]; unread?: UnreadTable[]; answered?: ReadonlySet<string> }> {
    const inserted: string[] = [];
    const errors: string[] = [];
    const { insert, misplaced, ineffective, unanswerable, owned } = planAccepts(rs, blocks);
    this.reportUnanswered(ineffective, unanswerable, owned);
    if (insert.length === 0) {
      await this.dropStale(stale, write);
      return { blocks };
    }
    const moved: string[] = [];
    for (const at of misplaced) {
      if (this.stopped) return { blocks };
      try {
        await write(deleteCommand(at));
        moved.push(describeRule(at));
      } catch (err) {
        errors.push(errorText(err));
      }
    }
    for (const cmd of distinctAccepts(insert)) {
      if (this.stopped) return { blocks };
      try {
        await write(cmd);
        inserted.push(commandText(cmd));
      } catch (err) {
        errors.push(errorText(err));
      }
    }
    // Legacy iptables deletes by the rule's options, not its position, which the inserts moved. Not
    // when an insert failed: the accepts it was to replace stay until the next check puts it in.
    if (errors.length === 0) await this.dropStale(stale, write);
    const reread = await this.deps.read(this.readPrefixes(podCIDRs), []);
    const after = forwardBlocks(reread, podCIDRs, this.deps.own?.());
    // Only what these accepts answered: a drop that appeared meanwhile (iptables-nft and
    // ip6tables-nft change the two families one after the other) is the next check's to accept, not
    // a failure of these.
    // Nor the blocks in a table another process owns: nothing was tried there (reportUnanswered).
    const answerable = (b: ForwardBlock) => b.targeted !== true && b.owned !== true;
    const answered = new Set(blocks.filter(answerable).map(describeBlock));
    const still = after.filter((b) => answerable(b) && answered.has(describeBlock(b)));
    this.deps.log.warn(
      {
        blocked: blocks.filter(answerable).map(describeBlock),
        inserted,
        ...(moved.length === 0 ? {} : { movedFrom: moved }),
        ...(errors.length === 0 ? {} : { errors }),
        ...(still.length === 0 ? {} : { stillBlocked: still.map(describeBlock) }),
      },
      still.length === 0
        ? 'the host firewall dropped pod traffic this node forwards; inserted rules that accept it (--no-accept-forward would only report it)'
        : 'the host firewall drops pod traffic this node forwards, and the accept rules trellis inserted did not let all of it through',
    );
    // The blocks whose accept went in: what the re-read cannot tell of them (its table unread) is taken
    // as answered, as the accept log says.
    const went = new Set(inserted);
    const answeredNow = insert.filter((b) => went.has(commandText(acceptCommand(b)))).map(describeBlock);
    return { blocks: after, unread: reread.unread ?? [], answered: new Set(answeredNow) };
  }

  /**
   * Says (once per distinct set) that accepts an earlier run inserted are still there while this run
   * inserts none: it neither adds nor deletes any, so what they let through stays let through (and is
   * not reported as blocked) until the operator deletes them.
   */
  private reportEarlier(earlier: readonly RuleAt[], without: readonly ForwardBlock[]): void {
    // By the commands (legacy iptables' name a rule by its options, not its position, which moves when
    // Docker re-inserts its jumps) and by what they hide: a drop appearing behind them is news.
    const remove = earlier.map((at) => commandText(deleteCommand(at)));
    const key = JSON.stringify([remove, without.map(describeBlock)]);
    if (key === this.reportedEarlier) return;
    this.reportedEarlier = key;
    if (earlier.length === 0) return;
    this.deps.log.warn(
      {
        rules: earlier.map(describeRule),
        ...(without.length === 0 ? {} : { withoutThem: without.map(describeBlock) }),
        remove,
      },
      'accept rules an earlier run of trellis inserted are still in the host firewall; with --no-accept-forward trellis neither inserts nor deletes any, so they stay until removed (withoutThem: what the host firewall would drop)',
    );
  }

  /** Says once (per distinct set) which legacy tables could not be read, and when all are read again. */
  private reportUnread(unread: readonly UnreadTable[]): void {
    const tables = unread.map(describeUnread);
    const key = tables.join('\n');
    if (key === this.reportedUnread) return;
    const before = this.reportedUnread;
    this.reportedUnread = key;
    if (tables.length > 0) {
      this.deps.log.warn(
        { tables },
        'could not read a legacy iptables table of the host firewall: what it drops is as last read, and nothing is accepted there until it can be (checked again later)',
      );
    } else if (before !== '') {
      this.deps.log.info("the host firewall's legacy iptables tables are read again");
    }
  }

  /** Says (at info, once per distinct set) which forward chains the check cannot judge. */
  private reportUndecided(chains: readonly string[]): void {
    const key = chains.join();
    if (key === this.reportedUndecided) return;
    this.reportedUndecided = key;
    if (chains.length === 0) return;
    this.deps.log.info(
      { chains },
      "the host firewall's forward chains hold rules trellis cannot judge (a queue, a chain it did not read, an unknown target): whether they let pod traffic through is not checked there",
    );
  }

  /**
   * Says once (per distinct set) what trellis leaves to the operator: drops its accepts in place do
   * not lift, policy drops reached through a goto or return, and drops in a table another process
   * owns (nftables' owner flag: firewalld 2.2+), which the kernel lets no one else change.
   */
  private reportUnanswered(
    ineffective: readonly ForwardBlock[],
    unanswerable: readonly ForwardBlock[],
    owned: readonly ForwardBlock[],
  ): void {
    const key = JSON.stringify([
      ineffective.map(describeBlock),
      unanswerable.map(describeBlock),
      owned.map(describeBlock),
    ]);
    if (key === this.reportedUnanswered) return;
    this.reportedUnanswered = key;
    if (ineffective.length > 0) {
      this.deps.log.warn(
        { stillBlocked: ineffective.map(describeBlock), fix: [...new Set(ineffective.map(fixCommand))] },
        "the host firewall drops pod traffic this node forwards although trellis's accept rules are in place; not inserting more",
      );
    }
    if (unanswerable.length > 0) {
      this.deps.log.warn(
        {
          blocked: unanswerable.map(describeBlock),
          after: unanswerable.map((b) => describeRule(b.exit!)),
        },
        "the host firewall's policy drops pod traffic this node forwards after a goto or return sends it there: trellis does not insert an accept (before that rule it would come ahead of the rules it leads to); accept the pod CIDRs in the chain the goto leads to, or before the return",
      );
    }
    if (owned.length > 0) {
      this.deps.log.warn(
        { blocked: owned.map(describeBlock), fix: [...new Set(owned.map(fixCommand))] },
        "the host firewall drops pod traffic this node forwards in a table another process owns (nftables' owner flag, as firewalld 2.2+ sets on its table): the kernel lets no one else change it, so trellis does not insert an accept; let the pod CIDRs through that firewall's own configuration",
      );
    }
  }

  /** Deletes these accepts of ours (staleAccepts), each logged when it fails. */
  private async dropStale(
    stale: readonly RuleAt[],
    write: (cmd: FirewallCommand) => Promise<unknown>,
  ): Promise<void> {
    const removed: string[] = [];
    for (const at of stale) {
      if (this.stopped) break;
      try {
        await write(deleteCommand(at));
        removed.push(describeRule(at));
      } catch (err) {
        this.deps.log.warn(
          { rule: describeRule(at), error: errorText(err) },
          'could not delete a stale accept rule',
        );
      }
    }
    if (removed.length > 0) {
      this.deps.log.info({ removed }, 'deleted accept rules for prefixes no longer accepted');
    }
  }
}

/** Our accepts of prefixes not in `podCIDRs`, but for those in a table another process owns. */
function staleAccepts(rs: ForwardRuleset, podCIDRs: readonly string[]): RuleAt[] {
  const wanted = new Set(podCIDRs.map((c) => canonicalCidr(c) ?? c));
  // Not in a table another process owns: the kernel would refuse the delete at every check.
  const owned = new Set(rs.baseChains.filter((c) => c.owned === true).map(tableKey));
  return ownAccepts(rulesWithChains(rs), (p) => p !== undefined && wanted.has(canonicalCidr(p) ?? p)).filter(
    (at) => !owned.has(tableKey(at.chain)),
  );
}

/**
 * Our accepts, for a run that inserts none: not in a table another process owns (the kernel refuses
 * a delete there, so no command to remove them can be given).
 */
function earlierAccepts(rs: ForwardRuleset): RuleAt[] {
  const owned = new Set(rs.baseChains.filter((c) => c.owned === true).map(tableKey));
  return ownAccepts(rulesWithChains(rs)).filter((at) => !owned.has(tableKey(at.chain)));
}

/** The ruleset as it reads without these rules (their chains' other rules keep their handles). */
function withoutRules(rs: ForwardRuleset, gone: readonly RuleAt[]): ForwardRuleset {
  if (gone.length === 0) return rs;
  const drop = new Set(gone.map((at) => `${chainKey(at.chain)} ${at.handle}`));
  const rules = new Map<string, Rule[]>();
  for (const [key, list] of rs.rules)
    rules.set(
      key,
      list.filter((r) => !drop.has(`${key} ${r.handle}`)),
    );
  return { ...rs, rules };
}

/** The tables of the chains that drop and of trellis's accepts, each once. */
function tablesOf(
  rs: ForwardRuleset,
  blocks: readonly ForwardBlock[],
  vxlanBlocks: readonly VxlanInBlock[],
): NftTableId[] {
  const chains: ChainRef[] = [
    ...blocks.map((b) => chainOfKey(b.chain)),
    ...vxlanBlocks.map((b) => chainOfKey(b.chain)),
    ...ownAccepts(rulesWithChains(rs)).map((a) => a.chain),
  ];
  const seen = new Map<string, NftTableId>();
  for (const c of chains) {
    const family = NFPROTO[c.family];
    if (family !== undefined) seen.set(`${c.family} ${c.table}`, { family, name: c.table });
  }
  return [...seen.values()];
}
