import { rmSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  buildConflist,
  type ChainedParts,
  ChainVersionProbe,
  CONFLIST_FILE_NAME,
  chainedParts,
  chainedTypes,
  configsBefore,
  configsShadowing,
  conflistText,
  describeChainProblems,
  entryExists,
  isMetaPluginConfig,
  publishConflist,
  removeConflist,
  runtimeMountNs,
  withChained,
  writeFileAtomic,
} from '../cniconf/index.ts';
import { PUBLISHED_NETWORK_NAME } from '../cniconf/render.ts';
import { errorText } from '../error-text.ts';
import type { Logger } from '../observe/logger.ts';
import type { AgentConfig } from './config.ts';

/** Binaries the published config list needs in the CNI bin dir (containerd also runs loopback). */
export const REQUIRED_CNI_BINARIES = ['trellis', 'portmap', 'loopback'] as const;

/** What keeps the config list unpublished: the binaries it names missing, or unable to serve it. */
export type PublishBlock =
  | { missing: string[] }
  | { problems: { binary: string; problem: string; transient?: true }[] };

/**
 * The config list a previous boot's agent published, withdrawn at start when no ready marker vouches
 * for this boot (a reboot empties /run, and the marker with it). It names an agent that is not ready
 * yet: a runtime that loads it hands the node's new pods to a socket nobody serves (containerd 1.x
 * even reports the node Ready on it), and one whose binary no longer runs here (a kernel of 64 KB
 * pages booted since) would stay published for good. Written again once this agent is ready. A
 * restart within the same boot (an upgrade, a crash) finds the marker and keeps the list. Only a list
 * naming this agent's socket is its to withdraw: another agent's (a test's, a standalone one with
 * --no-cni-config beside the node's) is left alone.
 */
export async function withdrawPreviousBootConflist(
  dir: string,
  socket: string,
  log: Logger,
  stateDir: string,
): Promise<void> {
  const file = join(dir, CONFLIST_FILE_NAME);
  const found = await readJson(file);
  if (!namesSocket(found, socket)) return;
  const chained = chainedParts(found, PUBLISHED_NETWORK_NAME);
  try {
    // What other tools chained into it is kept on disk before the list goes: the first publish puts
    // it back (a pod started before a mesh's installer inserts its plugin again would miss it), also
    // the publish of the next agent when this one dies before its own.
    if (chained !== undefined) {
      await writeFileAtomic(stateDir, WITHDRAWN_CHAINED_FILE, JSON.stringify(chained), 0o600);
    }
    if ((await removeConflist(dir, CONFLIST_FILE_NAME)) === 'removed') {
      log.info(
        { file, chained: chainedTypes(chained) },
        'CNI config list of a previous boot withdrawn (no ready marker): published again once this agent is ready',
      );
    }
  } catch (err) {
    log.warn(
      { file, error: errorText(err) },
      'cannot withdraw the CNI config list of a previous boot: the runtime may send pods to this agent before it is ready',
    );
  }
}

/** In the state directory: the other tools' parts of a withdrawn list, until the next publish. */
export const WITHDRAWN_CHAINED_FILE = 'withdrawn-chained-plugins.json';

/**
 * Writes the config list once the binaries it names are in place and run where the runtime runs them
 * (it would fail every pod otherwise). One per agent: it keeps the VERSION probe's cache and what it
 * last logged, so a pass that finds the same problem again does not log it again.
 */
export class CniConfigPublisher {
  readonly #config: AgentConfig;
  readonly #log: Logger;
  readonly #probe: ChainVersionProbe;
  #lastLogged = '';
  #fellBack = false;
  /** The problems of the last check, [] when the binaries were fine (the operator's status). */
  problems: { binary: string; problem: string }[] = [];
  /**
   * Config files in the conf dir that take new pods from ours, as of the last pass: the runtime takes
   * the first by name, so new pods get its network, not trellis ([] when ours is first, or what sorts
   * first is a meta-plugin such as Multus that hands pods on to trellis: configsShadowing).
   */
  shadowedBy: string[] = [];
  /**
   * The first of them is another network's own config, not a meta-plugin's (Multus) that may hand
   * pods on to trellis all the same (the check cannot tell every such setup): new pods surely get
   * that network.
   */
  shadowedByNetwork = false;

  readonly #stopping: AbortSignal | undefined;

  /** `stopping`: once aborted, nothing more is written (an agent told to stop never became ready). */
  constructor(config: AgentConfig, log: Logger, stopping?: AbortSignal) {
    this.#config = config;
    this.#log = log;
    this.#stopping = stopping;
    // PID 1's mount namespace is the host's, where the kubelet's runtime runs (containerd, CRI-O).
    const mountNs = runtimeMountNs(config.hostProc);
    this.#probe = new ChainVersionProbe(mountNs === undefined ? {} : { mountNs });
  }

  /** The publish under way: the next one starts after it. */
  #queue: Promise<unknown> = Promise.resolve();
  /** trellis's own list as last published (without other tools' plugins), for keep(). */
  #published: string | undefined;
  /** Whether WITHDRAWN_CHAINED_FILE may still be in the state directory. */
  #withdrawnMayWait = true;
  /** The chained plugin types last logged. */
  #saidChained = '';
  /** Publishes asked for and not finished: keep() leaves the list to them. */
  #publishing = 0;

  /**
   * Publishes (or leaves an unchanged list alone); returns what blocks it, undefined when published.
   * One at a time, in the order asked: the list from memory and the first API pass's may be asked for
   * together, and the VERSION probes take seconds; the one asked for last writes last.
   */
  publish(mtu: number): Promise<PublishBlock | undefined> {
    this.#publishing++;
    const run = this.#queue.then(async () => {
      try {
        const block = await this.#publish(mtu);
        // Every pass, published or blocked: a list already in place may be shadowed all the same.
        await this.#checkFirst();
        return block;
      } finally {
        this.#publishing--;
      }
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #publish(mtu: number): Promise<PublishBlock | undefined> {
    const config = this.#config;
    const log = this.#log;
    // An entry counts, a dangling symlink too: it may point into a host path this container does not
    // mount (install-cni keeps it); the VERSION probe below runs it where the runtime does.
    const present = await Promise.all(
      REQUIRED_CNI_BINARIES.map((b) => entryExists(join(config.cniBinDir, b))),
    );
    const missing = REQUIRED_CNI_BINARIES.filter((_, i) => !present[i]);
    if (missing.length > 0) {
      this.problems = missing.map((b) => ({ binary: join(config.cniBinDir, b), problem: 'is missing' }));
      log.warn({ missing, dir: config.cniBinDir }, 'not publishing the CNI config yet: binaries missing');
      return { missing };
    }
    // The versions every plugin of the chain speaks (our own shim speaks all of them): 1.1.0 only when
    // the installed portmap does too. loopback is not in the list (the runtime runs it on its own), but
    // a pod's sandbox fails without it all the same.
    const check = await this.#probe.check(
      REQUIRED_CNI_BINARIES.map((b) => ({ path: join(config.cniBinDir, b), chained: b !== 'loopback' })),
    );
    if (check.hostUnreachable !== undefined && !this.#fellBack) {
      this.#fellBack = true;
      log.warn(
        { hostProc: config.hostProc, error: check.hostUnreachable },
        "cannot enter the host's mount namespace: the CNI binaries are checked in the agent's own, which may have a newer glibc than the host",
      );
    }
    this.problems = check.problems;
    if (check.problems.length > 0) {
      const text = describeChainProblems(check.problems);
      if (check.problems.every((p) => p.transient === true)) {
        // Nothing known against the binaries: the node is out of processes or fds for a moment.
        log.warn(
          { problems: check.problems, dir: config.cniBinDir },
          `could not check the CNI binaries now: ${text}; checked again at the next pass (in 5 s while the node is not ready)`,
        );
      } else if (text !== this.#lastLogged) {
        this.#lastLogged = text;
        log.error(
          { problems: check.problems, dir: config.cniBinDir },
          `not publishing the CNI config: ${text} (the runtime would fail every pod)`,
        );
      }
      return { problems: check.problems };
    }
    if (this.#lastLogged !== '') {
      this.#lastLogged = '';
      log.info({ dir: config.cniBinDir }, 'the CNI binaries run now');
    }
    // The VERSION probes take a while: a SIGTERM meanwhile must not leave a list behind for a node
    // this agent never served.
    if (this.#stopping?.aborted === true) return undefined;
    const own = buildConflist({
      socket: config.socket,
      spoolDir: config.spoolDir,
      mtu,
      cniVersions: check.versions,
    });
    const file = join(config.cniConfDir, CONFLIST_FILE_NAME);
    // Other tools' plugins chained into the list in place stay (chained.ts); with none in place, those
    // of the list withdrawn at start.
    const found = await readJson(file);
    const withdrawn = join(config.stateDir, WITHDRAWN_CHAINED_FILE);
    const parts =
      found !== undefined
        ? chainedParts(found, PUBLISHED_NETWORK_NAME)
        : this.#withdrawnMayWait
          ? savedChainedParts(await readJson(withdrawn))
          : undefined;
    this.#sayChained(parts, file);
    const list = withChained(own, parts);
    // Compared as JSON, not as bytes: another tool that wrote the same list in its own layout (after
    // inserting its plugin) is not answered with a rewrite, nor would it answer ours with one.
    if (!isDeepStrictEqual(found, list) && (await this.#write(conflistText(list))) === 'written') {
      log.info({ file }, 'CNI config published');
    }
    this.#published = conflistText(own);
    if (this.#withdrawnMayWait) {
      // Published: what the withdrawn list held is in place again (or another list is).
      try {
        rmSync(withdrawn, { force: true });
        this.#withdrawnMayWait = false;
      } catch (err) {
        log.warn(
          { file: withdrawn, error: errorText(err) },
          "cannot remove the withdrawn list's chained plugins",
        );
      }
    }
    return undefined;
  }

  /** Says which plugins other tools chained into the list, when that changes. */
  #sayChained(parts: ChainedParts | undefined, file: string): void {
    const types = chainedTypes(parts);
    const said = types.join(',');
    if (said === this.#saidChained) return;
    const was = this.#saidChained;
    this.#saidChained = said;
    if (types.length > 0) {
      this.#log.info(
        { file, chained: types, cniVersions: ['1.0.0'] },
        'the CNI config list keeps the plugins other tools chained into it (it offers CNI 1.0.0 only while they are there)',
      );
    } else if (was !== '') {
      this.#log.info({ file }, 'no other plugin is chained into the CNI config list now');
    }
  }

  /** Writes the list (unless the same is in place); a failure names the conf dir and what it costs. */
  async #write(text: string): Promise<'written' | 'unchanged'> {
    const dir = this.#config.cniConfDir;
    try {
      return await publishConflist(dir, CONFLIST_FILE_NAME, text);
    } catch (err) {
      throw new ConfDirError(dir, err);
    }
  }

  /**
   * Puts the published list back when it was removed under the agent (a clean-up of /etc/cni/net.d,
   * another network's uninstall removing every file there): without it the runtime fails every new
   * pod, or takes another config, until the next full pass. Never while a publish is asked for or
   * runs, nor while the binaries last failed their check; nothing once the agent stops ('skipped').
   */
  keep(): Promise<'written' | 'present' | 'skipped'> {
    // A publish asked for or under way writes the list (or decides not to) itself: its VERSION probes
    // may take seconds, which the caller's other keeping (the CNI socket) must not wait for.
    if (this.#publishing > 0) return Promise.resolve('skipped');
    const run = this.#queue.then(async (): Promise<'written' | 'present' | 'skipped'> => {
      const text = this.#published;
      if (text === undefined || this.#stopping?.aborted === true) return 'skipped';
      // The last check found binaries that cannot serve the list: it stays as it is (in place, or
      // removed by someone who wants the runtime to report the network not ready).
      if (this.problems.length > 0) return 'skipped';
      const file = join(this.#config.cniConfDir, CONFLIST_FILE_NAME);
      if (await entryExists(file)) return 'present';
      await this.#write(text);
      this.#log.warn({ file }, 'the CNI config list was removed under the agent; written back');
      return 'written';
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Another network's config left in the conf dir (kindnet's 10-kindnet.conflist, flannel's, a
   * runtime's default 10-containerd-net.conflist) takes new pods if it sorts first, while everything
   * trellis reports looks healthy: logged when that starts or changes, and when it ends.
   */
  async #checkFirst(): Promise<void> {
    const dir = this.#config.cniConfDir;
    let before: string[];
    let first: string[];
    const parsed = new Map<string, unknown>();
    try {
      const entries = await readdir(dir);
      // Read only when something sorts first (a meta-plugin such as Multus hands pods on to trellis).
      first = configsBefore(entries, CONFLIST_FILE_NAME);
      for (const name of first) parsed.set(name, await readJson(join(dir, name)));
      before = configsShadowing(entries, CONFLIST_FILE_NAME, PUBLISHED_NETWORK_NAME, (n) => parsed.get(n));
    } catch {
      return; // just written there: a passing error; the next pass looks again
    }
    const meta = before.length > 0 && isMetaPluginConfig(parsed.get(before[0]!));
    // Set on every look: a file rewritten in place (Multus's config turned into a network's) keeps its name.
    this.shadowedByNetwork = before.length > 0 && !meta;
    if (before.join('\n') === this.shadowedBy.join('\n')) return;
    const was = this.shadowedBy;
    this.shadowedBy = before;
    if (before.length > 0) {
      // A Multus config naming another default network: make trellis its default, not delete it
      // (the Multus daemon writes it again, and the node loses Multus).
      const fix = meta
        ? `make trellis the default network of the meta-plugin (Multus) that ${join(dir, before[0]!)} configures: "clusterNetwork": "${PUBLISHED_NETWORK_NAME}" there (or in the Multus daemon's config that writes it)`
        : `remove ${before.map((f) => join(dir, f)).join(' ')}`;
      this.#log.warn(
        { dir, files: before, fix },
        `CNI config ${before[0]} sorts before ${CONFLIST_FILE_NAME}: containerd and CRI-O use the first file, so new pods get its network, not trellis`,
      );
    } else if (was.length > 0) {
      this.#log.info(
        { dir },
        first.length === 0
          ? `${CONFLIST_FILE_NAME} is the first CNI config again: new pods get trellis`
          : `the CNI config sorting before ${CONFLIST_FILE_NAME} hands new pods on to trellis again`,
      );
    }
  }
}

/** The config list could not be written into the conf dir: new pods get no network from trellis. */
export class ConfDirError extends Error {
  override readonly name = 'ConfDirError';
  constructor(dir: string, cause: unknown) {
    // HostFileError (atomic.ts) wraps the system error; its code says what to look at.
    const sys = ((cause as { cause?: unknown } | undefined)?.cause ?? cause) as NodeJS.ErrnoException;
    const hint =
      sys?.code === 'EROFS'
        ? ' (mounted read-only?)'
        : sys?.code === 'ENOSPC' || sys?.code === 'EDQUOT'
          ? ' (its file system is full)'
          : '';
    super(
      `cannot write the CNI config list into ${dir}${hint}: ${(cause as Error | undefined)?.message ?? String(cause)}; the runtime needs it there to set up new pods`,
      { cause },
    );
  }
}

/** Whether a config list's trellis plugin names `socket` (renderConflist's `socket` field). */
function namesSocket(list: unknown, socket: string): boolean {
  const plugins = (list as { plugins?: unknown } | undefined)?.plugins;
  return (
    Array.isArray(plugins) &&
    plugins.some(
      (p) =>
        (p as { type?: unknown; socket?: unknown } | null)?.type === 'trellis' &&
        (p as { socket?: unknown }).socket === socket,
    )
  );
}

/** WITHDRAWN_CHAINED_FILE's parts as withdrawPreviousBootConflist wrote them; undefined otherwise. */
function savedChainedParts(saved: unknown): ChainedParts | undefined {
  const s = saved as Partial<ChainedParts> | undefined;
  if (typeof s !== 'object' || s === null || !Array.isArray(s.before) || !Array.isArray(s.after))
    return undefined;
  const fields =
    typeof s.fields === 'object' && s.fields !== null && !Array.isArray(s.fields) ? s.fields : {};
  return { before: s.before, after: s.after, fields };
}

/** A config file's JSON; undefined when it cannot be read or parsed. */
async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** What the agent waits for while `block` keeps the list unpublished (its not-ready reason). */
export function describePublishBlock(block: PublishBlock, binDir: string): string {
  return 'missing' in block
    ? `CNI binaries ${block.missing.join(', ')} in ${binDir} (the install-cni init container puts them there)`
    : `CNI binaries that run where the runtime runs them: ${describeChainProblems(block.problems)}`;
}
