/** The host adapters the agent's commands share: the firewall tools, the masquerade syncer, the locks, malloc trimming. */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentHooks } from '../../pkg/agent/agent.ts';
import { FilePageUnmapPolicy } from '../../pkg/agent/file-page-policy.ts';
import { IdleTrim } from '../../pkg/agent/idle-trim.ts';
import { errorText } from '../../pkg/error-text.ts';
import { type FirewallCommand, hostLegacyIptables, type LegacyIptables } from '../../pkg/firewall/index.ts';
import { MasqSyncer, NftRunner } from '../../pkg/masq/index.ts';
import { NftSetWriter } from '../../pkg/netlink/index.ts';
import {
  fileBackedRssKb,
  lockFile,
  lockNetns,
  trimMalloc,
  unmapCleanFilePages,
} from '../../pkg/netns/index.ts';
import type { Logger } from '../../pkg/observe/logger.ts';
import { readOnChange } from '../../pkg/read-on-change.ts';

/** The abstract unix socket name that holds one agent per network namespace (pkg/netns lockNetns). */
export const NETNS_LOCK = 'trellis-agent';
/** Quiet this long after a CNI call or a pass before malloc_trim; at most one trim per interval. */
const TRIM_IDLE_MS = 2000;
const TRIM_MIN_INTERVAL_MS = 10_000;
/** File-backed RSS mapped again since the last unmap before a trim unmaps it again (~6.6 MB in a steady minute at 5,000 nodes). */
const FILE_GROWTH_KB = 12 * 1024;

/**
 * One agent per state directory and per network namespace: both locks, or neither. `socketDir` (the
 * CNI socket's, a host directory every agent of the node shares) holds the namespace's lock file when
 * its abstract name is squatted.
 */
export function lockAgentState(dir: string, socketDir: string): { release(): void; warning?: string } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const state = lockFile(join(dir, 'agent.lock'));
  try {
    const netns = lockNetns(NETNS_LOCK, { fallbackDir: socketDir });
    return {
      release: () => {
        netns.release();
        state.release();
      },
      ...(netns.warning === undefined ? {} : { warning: netns.warning }),
    };
  } catch (err) {
    state.release();
    throw err;
  }
}

/**
 * The agent's nf_tables netlink socket: the masquerade sets' elements, and the ruleset generation
 * with which the periodic checks skip listing what no transaction changed. Undefined (warned) when it
 * cannot open: nft then does all of it.
 */
export function nftSocket(log: Logger): NftSetWriter | undefined {
  try {
    return new NftSetWriter();
  } catch (err) {
    log.warn(
      { error: errorText(err) },
      'cannot open an nf_tables netlink socket: every masquerade change and every periodic check runs nft',
    );
    return undefined;
  }
}

/**
 * The table's syncer; Node events change set elements over netlink when the socket opened, else by
 * nft. With the socket, its resync's check lists the table again only once the ruleset generation
 * moved (pkg/read-on-change.ts): an unchanged table is not listed with a spawned nft every minute.
 */
export function masqSyncer(socket: NftSetWriter | undefined): MasqSyncer {
  const runner = new NftRunner();
  if (socket === undefined) return new MasqSyncer(runner);
  const snapshot = readOnChange((table?: string) => runner.snapshot(table), {
    generation: () => socket.generation(),
    sameArgs: ([a], [b]) => a === b,
  });
  return new MasqSyncer(
    {
      apply: (text) => runner.apply(text),
      check: (text) => runner.check(text),
      ran: (pid) => runner.ran(pid),
      snapshot,
    },
    socket,
  );
}

/**
 * The programs that read and edit the host's own firewall: nft, and legacy iptables where the kernel
 * holds its tables (pkg/firewall/legacy-host.ts). NftRunner runs any of them: argv, timeout, stderr.
 */
export function firewallTools(): {
  run: (cmd: FirewallCommand) => Promise<string>;
  runTool: (tool: string, args: string[], input?: string) => Promise<string>;
  legacy: LegacyIptables;
} {
  const runners = new Map<string, NftRunner>();
  const run = (tool: string, args: string[], input?: string): Promise<string> => {
    let r = runners.get(tool);
    if (r === undefined) {
      r = new NftRunner({ nftPath: tool });
      runners.set(tool, r);
    }
    return r.run(args, input);
  };
  return { run: (cmd) => run(cmd.tool, cmd.args), runTool: run, legacy: hostLegacyIptables(run) };
}

/**
 * Memory back to the kernel after a burst of work (pkg/agent/idle-trim.ts): malloc's free pages, and
 * the file pages mapped since the last unmap, after the first burst (the start's list, cold pass and
 * first CNI calls) and then only once they add up to FILE_GROWTH_KB (pkg/agent/file-page-policy.ts).
 */
export function idleTrim(log: Logger): IdleTrim {
  const mb = (bytes: number) => Math.round(bytes / 1e5) / 10;
  const unmapPolicy = new FilePageUnmapPolicy(FILE_GROWTH_KB);
  return new IdleTrim({
    trim: () => {
      trimMalloc();
      if (!unmapPolicy.due(fileBackedRssKb())) return undefined;
      const done = unmapFilePages(log);
      unmapPolicy.unmapped(fileBackedRssKb());
      return done;
    },
    idleMs: TRIM_IDLE_MS,
    minIntervalMs: TRIM_MIN_INTERVAL_MS,
    rss: () => process.memoryUsage.rss(),
    onTrim: (o) =>
      log.debug(
        {
          durationMs: Math.round(o.durationMs * 100) / 100,
          rssMbBefore: mb(o.rssBefore),
          rssMbAfter: mb(o.rssAfter),
          ...o.detail,
        },
        'memory handed back after a burst of work',
      ),
    onError: (err) =>
      log.warn(
        { error: errorText(err) },
        'could not hand memory back to the kernel (malloc_trim, madvise); not trying again',
      ),
  });
}

/**
 * The pages of the executable and libraries only the start touched (the snapshot V8 deserialized,
 * the bootstrap's code; ~30 MB of RSS), unmapped before the first list and pass add their own.
 */
export function unmapStartupPages(log: Logger): void {
  const t0 = performance.now();
  const done = unmapFilePages(log);
  if (done !== undefined) {
    log.debug(
      { ...done, durationMs: Math.round((performance.now() - t0) * 100) / 100 },
      'file pages unmapped',
    );
  }
}

/** unmapCleanFilePages, its MB for a log line; a failure (smaps unreadable) is said and costs only RSS. */
function unmapFilePages(log: Logger): { fileMbUnmapped: number; refused: number } | undefined {
  try {
    const done = unmapCleanFilePages();
    return { fileMbUnmapped: Math.round(done.kb / 102.4) / 10, refused: done.refused };
  } catch (err) {
    log.warn(
      { error: errorText(err) },
      'could not unmap the clean file pages (executable, libraries); RSS stays higher',
    );
    return undefined;
  }
}

/** The agent's hooks, each CNI call and pass also counted as work for the trim. */
export function withTrim(hooks: AgentHooks, trim: IdleTrim): AgentHooks {
  return {
    ...hooks,
    onCniCall: (record) => {
      hooks.onCniCall?.(record);
      trim.noteWork();
    },
    onPass: (outcome) => {
      hooks.onPass?.(outcome);
      trim.noteWork();
    },
  };
}

/** `iptables-nft-save -t filter` (ip6tables-nft-save for 6): what nft shows of iptables-nft's xt matches by name only. */
export function iptablesNftSave(
  firewall: ReturnType<typeof firewallTools>,
): (family: 4 | 6) => Promise<string> {
  return (family) =>
    firewall.runTool(family === 4 ? 'iptables-nft-save' : 'ip6tables-nft-save', ['-t', 'filter']);
}
