/**
 * A small Dockerfile reader for tests: enough of the syntax to check the structure of trellis's own
 * Dockerfile (line continuations, comments, parser directives, ARG defaults in FROM, stages).
 */

export interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, ... */
  keyword: string;
  /** Everything after the keyword, continuation lines joined with a space. */
  args: string;
  line: number;
}

export interface Stage {
  /** The FROM image with global ARG defaults substituted. */
  image: string;
  name: string | undefined;
  platform: string | undefined;
  instructions: Instruction[];
}

export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  let startLine = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    // Comments (and parser directives) are whole lines, also inside a continued instruction.
    if (trimmed.startsWith('#') || (trimmed === '' && pending === '')) continue;
    if (pending === '') startLine = i + 1;
    if (trimmed.endsWith('\\')) {
      pending += `${trimmed.slice(0, -1).trim()} `;
      continue;
    }
    const full = (pending + trimmed).trim();
    pending = '';
    if (full === '') continue;
    const m = /^(\S+)\s*(.*)$/s.exec(full)!;
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), line: startLine });
  }
  if (pending !== '') throw new Error('Dockerfile ends inside a continued line');
  return out;
}

export function stages(instructions: Instruction[]): Stage[] {
  const globals = new Map<string, string>();
  const result: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'ARG' && result.length === 0) {
      const [k, v] = ins.args.split('=', 2);
      globals.set(k!.trim(), (v ?? '').trim());
      continue;
    }
    if (ins.keyword === 'FROM') {
      const words = ins.args.split(/\s+/);
      let platform: string | undefined;
      while (words[0]?.startsWith('--')) {
        const flag = words.shift()!;
        if (flag.startsWith('--platform=')) platform = flag.slice('--platform='.length);
      }
      const image = words[0]!.replace(/\$\{?(\w+)\}?/g, (_, k: string) => globals.get(k) ?? '');
      const name = words[1]?.toUpperCase() === 'AS' ? words[2] : undefined;
      result.push({ image, name, platform, instructions: [] });
      continue;
    }
    const current = result.at(-1);
    if (current === undefined) throw new Error(`line ${ins.line}: ${ins.keyword} before the first FROM`);
    current.instructions.push(ins);
  }
  return result;
}

/** The exec-form (JSON array) arguments of an instruction such as ENTRYPOINT, or undefined (shell form). */
export function execForm(ins: Instruction): string[] | undefined {
  if (!ins.args.startsWith('[')) return undefined;
  const parsed: unknown = JSON.parse(ins.args);
  return Array.isArray(parsed) && parsed.every((x) => typeof x === 'string') ? parsed : undefined;
}
