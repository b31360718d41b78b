/**
 * The CNI environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH) turned
 * into a typed request, validated per verb. Takes the environment as a parameter so callers never read
 * process globals here.
 */
import { type CniArgs, parseCniArgsLeniently } from './args.ts';
import { CniCode, CniError } from './errors.ts';
import { isCniName, quote, utf8Length } from './text.ts';

// The constants the CNI binary loads are `readonly`, not frozen: five Object.freeze calls cost its
// one-shot run 8-9 page faults (0-0.3 ms on the test VM, bench/HISTORY.md); the types forbid writes.
export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

/**
 * The verbs that set up a pod: they read the config's pod fields (mtu, dns, logLevel, args,
 * capabilities, runtimeConfig) and its timeoutMs, and fail on one they cannot use. libcni hands DEL, GC
 * and STATUS the config list as it is now: one bad edit there must not fail every DEL on the node (the
 * runtime would retry them for ever, leases and veths held), so those verbs go on without them. The
 * shim (its timeoutMs) and the agent (pkg/cni/netconf.ts) both follow it.
 */
export const POD_SETUP_VERBS: ReadonlySet<CniCommand> = new Set(['ADD', 'CHECK']);

export interface CniEnv {
  command: CniCommand;
  /** Set for ADD, DEL and CHECK (always validated there); undefined for the other verbs. */
  containerId?: string;
  /** Absolute path; undefined when absent or empty (containerd's second DEL sends CNI_NETNS=""). */
  netns?: string;
  /** Set for ADD, DEL and CHECK; undefined for the other verbs. */
  ifname?: string;
  /** Parsed CNI_ARGS for ADD, DEL and CHECK; empty for the other verbs (they carry no pod). */
  args: CniArgs;
  /** CNI_PATH split on ':' with empty entries dropped. */
  path: string[];
  /**
   * DEL only: what was wrong with CNI_NETNS or CNI_ARGS, which DEL does not need (it finds the
   * attachment by container id and ifname), so it went on without them; the agent logs it at warn.
   */
  ignored?: string[];
}

type Var = 'CNI_CONTAINERID' | 'CNI_NETNS' | 'CNI_IFNAME' | 'CNI_PATH';

/**
 * Required variables per verb, from the 1.1 spec's per-operation "Required environment parameters".
 * The Go skel also demands CNI_PATH for ADD/DEL/CHECK because its plugins exec IPAM plugins; trellis
 * delegates to nothing, so it follows the spec and leaves CNI_PATH optional there. GC lists CNI_PATH as
 * required in the spec, so it is required here.
 */
export const REQUIRED_ENV: Readonly<Record<CniCommand, readonly Var[]>> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  VERSION: [],
  GC: ['CNI_PATH'],
  STATUS: [],
};

/** Verbs that act on one attachment (container + interface). */
const ATTACHMENT_VERBS: ReadonlySet<CniCommand> = new Set(['ADD', 'DEL', 'CHECK']);

const MAX_IFNAME_BYTES = 15;

export function isCniCommand(s: string): s is CniCommand {
  return (CNI_COMMANDS as readonly string[]).includes(s);
}

/**
 * Parses and validates the CNI environment. An empty variable counts as absent (as in the skel).
 * Throws ONE CniError(INVALID_ENV) whose message names every missing or invalid variable; an unknown
 * CNI_COMMAND is also INVALID_ENV (the skel's "unknown CNI_COMMAND", code 4).
 */
export function parseCniEnv(env: Readonly<Record<string, string | undefined>>): CniEnv {
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  const rawCommand = get('CNI_COMMAND');
  if (rawCommand === undefined) {
    throw new CniError(CniCode.INVALID_ENV, 'invalid CNI environment: CNI_COMMAND is required');
  }
  if (!isCniCommand(rawCommand)) {
    throw new CniError(
      CniCode.INVALID_ENV,
      `invalid CNI environment: unknown CNI_COMMAND ${quote(rawCommand)} (expected one of ${CNI_COMMANDS.join(', ')})`,
    );
  }
  const command = rawCommand;
  const problems: string[] = [];
  const required = REQUIRED_ENV[command];
  for (const name of required) {
    if (get(name) === undefined) problems.push(`${name} is required for ${command}`);
  }

  const attachment = ATTACHMENT_VERBS.has(command);
  const containerId = attachment ? get('CNI_CONTAINERID') : undefined;
  const ifname = attachment ? get('CNI_IFNAME') : undefined;
  const netns = attachment ? get('CNI_NETNS') : undefined;
  const rawArgs = attachment ? (get('CNI_ARGS') ?? '') : '';

  if (containerId !== undefined) {
    const p = containerIdProblem(containerId);
    if (p !== undefined) problems.push(p);
  }
  // A DEL that fails is retried by the runtime for ever while the lease, veth and routes stay: it
  // fails only on what it needs to find the attachment (the id and the interface name).
  const lenient = command === 'DEL';
  const ignored: string[] = [];
  let netnsOk = netns !== undefined;
  if (netns !== undefined) {
    const p = netnsProblem(netns);
    if (p !== undefined) {
      (lenient ? ignored : problems).push(p);
      netnsOk = false;
    }
  }
  if (ifname !== undefined) {
    const p = interfaceNameProblem(ifname);
    if (p !== undefined) problems.push(`CNI_IFNAME ${quote(ifname)} ${p}`);
    // The kernel refuses a link named after every interface's sysctl directories. Only what creates
    // one is refused: the runtime's DEL after that failed ADD finds nothing, and succeeds.
    else if (!lenient && (ifname === 'all' || ifname === 'default')) {
      problems.push(
        `CNI_IFNAME ${quote(ifname)} must not be "${ifname}" (a sysctl directory of every interface)`,
      );
    }
  }
  const parsedArgs = parseCniArgsLeniently(rawArgs);
  (lenient ? ignored : problems).push(...parsedArgs.problems);

  if (problems.length > 0) {
    throw new CniError(CniCode.INVALID_ENV, `invalid CNI environment: ${problems.join('; ')}`);
  }
  const out: CniEnv = { command, args: parsedArgs.args, path: splitPath(get('CNI_PATH')) };
  if (containerId !== undefined) out.containerId = containerId;
  if (netns !== undefined && netnsOk) out.netns = netns;
  if (ifname !== undefined) out.ifname = ifname;
  if (ignored.length > 0) out.ignored = ignored;
  return out;
}

function splitPath(s: string | undefined): string[] {
  const out: string[] = [];
  if (s === undefined) return out;
  // A loop, not filter(): a callback builtin's first use costs the shim ~0.1 ms of start-up.
  for (const p of s.split(':')) if (p !== '') out.push(p);
  return out;
}

function containerIdProblem(id: string): string | undefined {
  if (isCniName(id)) return undefined;
  return `CNI_CONTAINERID ${quote(id)} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'`;
}

function netnsProblem(netns: string): string | undefined {
  if (!netns.startsWith('/')) return `CNI_NETNS ${quote(netns)} is not an absolute path`;
  if (netns.includes('\0')) return `CNI_NETNS ${quote(netns)} contains a NUL byte`;
  return undefined;
}

/**
 * Why an interface name is invalid, or undefined when it is valid. Mirrors Go's
 * utils.ValidateInterfaceName (non-empty, at most 15 bytes, not "." or "..", no '/', ':' or Unicode
 * whitespace) and also refuses NUL, which the kernel would truncate at.
 */
export function interfaceNameProblem(name: string): string | undefined {
  if (name === '') return 'is empty';
  const bytes = utf8Length(name);
  if (bytes > MAX_IFNAME_BYTES) return `is ${bytes} bytes long; the limit is ${MAX_IFNAME_BYTES}`;
  if (name === '.' || name === '..') return 'must not be "." or ".."';
  for (const ch of name) {
    if (ch === '/') return "contains '/'";
    if (ch === ':') return "contains ':'";
    if (ch === '\0') return 'contains a NUL byte';
    if (isGoSpace(ch.codePointAt(0)!)) return 'contains whitespace';
  }
  return undefined;
}

/** Go's unicode.IsSpace: ASCII \t\n\v\f\r and space, U+0085, U+00A0, and the Unicode White_Space set. */
function isGoSpace(c: number): boolean {
  if (c <= 0xff) return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0x85 || c === 0xa0;
  return (
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}
