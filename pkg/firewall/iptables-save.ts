/**
 * Legacy iptables (x_tables, the kernel's ip_tables/ip6_tables) is invisible to nft: a host whose
 * Docker or firewall still uses `iptables-legacy` (Amazon Linux 2, CentOS 7, older Ubuntu set to
 * legacy) can drop pod traffic at the forward hook while `nft list chains` shows nothing. Its filter
 * table's FORWARD chain is one more base chain at that hook (priority 0). This parses
 * `iptables-legacy-save -t filter` into the same shape the nft reader gives (ruleset.ts), translating
 * the options the walks judge (-s, -d, -i, -o, -p, negated or not, destination ports, conntrack
 * states, address types, `-m comment`, the verdicts, jumps and gotos) into nft's JSON expressions, and
 * every other option into an xt match or target they cannot judge. Each rule keeps its options as
 * saved, so it can be deleted by what it is (`-D CHAIN spec`) rather than by a position that moves
 * whenever another program edits the chain. iptables-nft-save prints the same format: read.ts uses
 * this parser for what iptables-nft's extensions match, which nft shows by name only.
 */
import type { BaseChain, ForwardRuleset, LegacyFamily, Rule } from './ruleset.ts';

export class IptablesSaveError extends Error {
  constructor(tool: string, line: number, why: string) {
    super(`${tool}-save output, line ${line}: ${why}`);
    this.name = 'IptablesSaveError';
  }
}

/**
 * Splits one saved rule into its words: iptables-save double-quotes a word with spaces or quotes in it
 * (a comment) and escapes `"` and `\` inside with a backslash.
 */
export function splitSaveLine(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) word += line[++i];
      else if (c === '"') quoted = false;
      else word += c;
    } else if (c === '"') {
      quoted = true;
      inWord = true;
    } else if (c === ' ' || c === '\t') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quoted) throw new Error('unterminated quote');
  if (inWord) words.push(word);
  return words;
}

/** The verdicts iptables spells as targets; any other upper-case target is an extension. */
const BUILTIN_VERDICTS: Readonly<Record<string, string>> = {
  ACCEPT: 'accept',
  DROP: 'drop',
  RETURN: 'return',
  QUEUE: 'queue',
  NFQUEUE: 'queue',
};

/**
 * Modules whose options become matches of their own (moduleMatch): loading one filters nothing by
 * itself. An option of theirs moduleMatch does not know stays an xt match the walks cannot judge.
 */
const TRANSLATED_MODULES = new Set(['tcp', 'udp', 'multiport', 'conntrack', 'state', 'addrtype']);

/** `8472`, `6000:6100` (a range) or undefined. */
function portValue(text: string): unknown {
  if (/^\d+$/.test(text)) return Number(text);
  const range = /^(\d+):(\d+)$/.exec(text);
  return range === null ? undefined : { range: [Number(range[1]), Number(range[2])] };
}

/**
 * One option of a module, as a match: a destination port of `-m tcp`/`-m udp` (`--dport`), or of
 * `-m multiport` (`--dports a,b:c`, as nft's `th dport`); `--ctstate`/`--state` as `ct state`;
 * `-m addrtype --dst-type` as `fib daddr type`; anything else an xt match the walks cannot judge
 * (`udp --sport`, `conntrack --ctproto`).
 */
function moduleMatch(
  module: string,
  option: string,
  args: readonly string[],
  op: string,
): Record<string, unknown> {
  const ports = (args[0] ?? '').split(',').map(portValue);
  const isDport =
    ((module === 'tcp' || module === 'udp') && (option === '--dport' || option === '--destination-port')) ||
    (module === 'multiport' && (option === '--dports' || option === '--destination-ports'));
  if (isDport && ports.length > 0 && ports.every((p) => p !== undefined)) {
    const protocol = module === 'multiport' ? 'th' : module;
    const right = ports.length === 1 ? ports[0] : { set: ports };
    return { match: { op, left: { payload: { protocol, field: 'dport' } }, right } };
  }
  const values = (args[0] ?? '').toLowerCase().split(',');
  // Conntrack's states and address types as nft writes them natively (`ct state`, `fib daddr type`).
  if ((module === 'conntrack' && option === '--ctstate') || (module === 'state' && option === '--state'))
    return { match: { op: op === '!=' ? '!=' : 'in', left: { ct: { key: 'state' } }, right: values } };
  if (module === 'addrtype' && option === '--dst-type')
    return { match: { op, left: { fib: { result: 'type', flags: ['daddr'] } }, right: values } };
  return { xt: { type: 'match', name: `${module} ${option}` } };
}

/** `10.0.0.0/8`, `10.1.2.3` (a host), or a dotted mask the walk cannot judge (undefined). */
function prefixExpr(value: string): unknown {
  const [addr, len] = value.split('/');
  if (addr === undefined || addr === '') return undefined;
  if (len === undefined) return addr;
  if (!/^\d+$/.test(len)) return undefined;
  return { prefix: { addr, len: Number(len) } };
}

/** `eth+` is iptables' wildcard for every name starting `eth`; nft writes `eth*`. */
function ifname(value: string): string {
  return value.endsWith('+') ? `${value.slice(0, -1)}*` : value;
}

/**
 * One rule's words after `-A CHAIN` into nft-shaped expressions. `chains` are the table's user
 * chains: `-j NAME` of one is a jump, anything else an extension target.
 */
function ruleExpr(
  words: readonly string[],
  family: 4 | 6,
  chains: ReadonlySet<string>,
): { expr: Record<string, unknown>[]; comment?: string } {
  const expr: Record<string, unknown>[] = [];
  let comment: string | undefined;
  let negate = false;
  let module: string | undefined;
  let inTarget = false;
  const op = (): string => (negate ? '!=' : '==');
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '!') {
      negate = true;
      continue;
    }
    const value = words[i + 1];
    switch (w) {
      case '-s':
      case '-d': {
        i++;
        const right = value === undefined ? undefined : prefixExpr(value);
        const payload = { protocol: family === 4 ? 'ip' : 'ip6', field: w === '-s' ? 'saddr' : 'daddr' };
        expr.push(
          right === undefined
            ? { xt: { type: 'match', name: w } }
            : { match: { op: op(), left: { payload }, right } },
        );
        module = undefined;
        break;
      }
      case '-i':
      case '-o':
        i++;
        expr.push({
          match: {
            op: op(),
            left: { meta: { key: w === '-i' ? 'iifname' : 'oifname' } },
            right: ifname(value ?? ''),
          },
        });
        module = undefined;
        break;
      case '-p':
        i++;
        expr.push({ match: { op: op(), left: { meta: { key: 'l4proto' } }, right: value ?? '' } });
        module = undefined;
        break;
      case '-f':
        expr.push({ xt: { type: 'match', name: 'fragment' } });
        module = undefined;
        break;
      case '-m':
        i++;
        module = value ?? '';
        // The port modules' options become matches of their own (below); any other module is an xt
        // match the walk judges by name: `comment` filters nothing, any other may.
        if (!TRANSLATED_MODULES.has(module)) expr.push({ xt: { type: 'match', name: module } });
        break;
      case '-j':
      case '-g': {
        i++;
        inTarget = true;
        const target = value ?? '';
        if (w === '-g') expr.push({ goto: { target } });
        else if (chains.has(target)) expr.push({ jump: { target } });
        else if (BUILTIN_VERDICTS[target] !== undefined) expr.push({ [BUILTIN_VERDICTS[target]]: null });
        else expr.push({ xt: { type: 'target', name: target } });
        module = undefined;
        break;
      }
      default: {
        // A module's or target's own option (`--comment TEXT`, `--ctstate NEW`, `--reject-with X`):
        // it takes the words up to the next option.
        const args: string[] = [];
        while (i + 1 < words.length && !words[i + 1]!.startsWith('-') && words[i + 1] !== '!')
          args.push(words[++i]!);
        if (inTarget) break; // a target's option decides nothing more
        if (w === '--comment' && module === 'comment') comment = args[0];
        else if (module !== undefined && module !== 'comment') expr.push(moduleMatch(module, w, args, op()));
      }
    }
    negate = false;
  }
  return comment === undefined ? { expr } : { expr, comment };
}

/**
 * The filter table of `iptables-legacy-save -t filter` (or ip6tables-legacy-save) as a ruleset: its
 * FORWARD chain as the base chain (and INPUT, with `input`), rules numbered from 1 as iptables numbers them (`-I CHAIN N`
 * inserts before rule N), every chain's rules kept (the table is small: its big chains are nat's).
 * No filter table in the output: nothing.
 */
export function parseIptablesSave(text: string, family: 4 | 6, input = false): ForwardRuleset {
  const tool: LegacyFamily = family === 4 ? 'iptables-legacy' : 'ip6tables-legacy';
  const baseChains: BaseChain[] = [];
  const rules = new Map<string, Rule[]>();
  const chains = new Set<string>();
  let table: string | undefined;
  const lines = text.split('\n');
  const key = (name: string): string => `${tool} filter ${name}`;
  for (const [n, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      table = line.slice(1);
      continue;
    }
    if (table !== 'filter') continue;
    if (line === 'COMMIT') {
      table = undefined;
      continue;
    }
    if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(' ');
      if (name === undefined || name === '')
        throw new IptablesSaveError(tool, n + 1, 'a chain without a name');
      rules.set(key(name), []);
      if (policy === '-') chains.add(name);
      else if (name === 'FORWARD' || (input && name === 'INPUT')) {
        baseChains.push({
          family: tool,
          table: 'filter',
          name,
          policy: policy === 'DROP' ? 'drop' : 'accept',
          prio: 0,
          ...(name === 'INPUT' ? { hook: 'input' as const } : {}),
        });
      }
      continue;
    }
    let words: string[];
    try {
      words = splitSaveLine(line);
    } catch (err) {
      throw new IptablesSaveError(tool, n + 1, (err as Error).message);
    }
    if (words[0] !== '-A' || words[1] === undefined)
      throw new IptablesSaveError(tool, n + 1, `expected "-A CHAIN ...", got "${line}"`);
    const chain = words[1];
    const list = rules.get(key(chain));
    if (list === undefined) throw new IptablesSaveError(tool, n + 1, `rule of undeclared chain ${chain}`);
    const spec = words.slice(2);
    list.push({ handle: list.length + 1, ...ruleExpr(spec, family, chains), spec });
  }
  return { baseChains, rules };
}
