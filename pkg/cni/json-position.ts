/**
 * Where a JSON text first goes wrong. JSON.parse in Node (V8) names the position, but Bun's
 * JavaScriptCore does not, and the shim runs on Bun; this scanner gives both the same message. It runs
 * only after JSON.parse failed, is iterative (a megabyte of '[' cannot overflow the stack) and follows
 * RFC 8259 as JSON.parse does.
 */

export interface JsonErrorPosition {
  /** Index in the string (UTF-16 units) of the first character that cannot continue a valid text. */
  offset: number;
  line: number;
  column: number;
}

/** Returns where the text stops being JSON, or undefined when it is valid JSON. */
export function jsonErrorPosition(s: string): JsonErrorPosition | undefined {
  const offset = scan(s);
  if (offset < 0) return undefined;
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset; i++) {
    if (s.charCodeAt(i) === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return { offset, line, column: offset - lineStart + 1 };
}

type State = 'value' | 'valueOrClose' | 'key' | 'keyOrClose' | 'after';

function scan(s: string): number {
  let i = 0;
  const stack: number[] = []; // '{' or '[' char codes
  let state: State = 'value';
  const skipWs = () => {
    while (i < s.length) {
      const c = s.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const string = (): boolean => {
    i++; // opening quote
    while (i < s.length) {
      const c = s.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return true;
      }
      if (c < 0x20) return false;
      if (c === 0x5c) {
        const e = s[i + 1];
        if (e === 'u') {
          i += 2;
          for (let k = 0; k < 4; k++, i++) {
            if (!/[0-9a-fA-F]/.test(s[i] ?? '')) return false;
          }
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else {
          i++;
          return false;
        }
      } else i++;
    }
    return false;
  };
  const scalar = (): boolean => {
    const c = s[i];
    if (c === '"') return string();
    const lit = c === 't' ? 'true' : c === 'f' ? 'false' : c === 'n' ? 'null' : undefined;
    if (lit !== undefined) {
      // Character by character, so "nul" fails where it stops matching, as V8 reports it.
      for (const ch of lit) {
        if (s[i] !== ch) return false;
        i++;
      }
      return true;
    }
    return number();
  };
  // Stops at the first character a number cannot have, like V8 ("1." fails at the end, not at '.').
  const digits = (): boolean => {
    const start = i;
    while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) i++;
    return i > start;
  };
  const number = (): boolean => {
    if (s[i] === '-') i++;
    if (s[i] === '0') i++;
    else if (!digits()) return false;
    if (s[i] === '.') {
      i++;
      if (!digits()) return false;
    }
    if (s[i] === 'e' || s[i] === 'E') {
      i++;
      if (s[i] === '+' || s[i] === '-') i++;
      if (!digits()) return false;
    }
    return true;
  };

  for (;;) {
    skipWs();
    if (state === 'value' || state === 'valueOrClose') {
      const c = s.charCodeAt(i);
      if (state === 'valueOrClose' && c === 0x5d) {
        i++;
        stack.pop();
        state = 'after';
      } else if (c === 0x7b || c === 0x5b) {
        stack.push(c);
        i++;
        state = c === 0x7b ? 'keyOrClose' : 'valueOrClose';
      } else if (scalar()) state = 'after';
      else return i;
      continue;
    }
    if (state === 'key' || state === 'keyOrClose') {
      if (state === 'keyOrClose' && s.charCodeAt(i) === 0x7d) {
        i++;
        stack.pop();
        state = 'after';
        continue;
      }
      if (s.charCodeAt(i) !== 0x22 || !string()) return i;
      skipWs();
      if (s.charCodeAt(i) !== 0x3a) return i;
      i++;
      state = 'value';
      continue;
    }
    // after a value
    const top = stack[stack.length - 1];
    if (top === undefined) return i < s.length ? i : -1;
    const c = s.charCodeAt(i);
    if (c === 0x2c) {
      i++;
      state = top === 0x7b ? 'key' : 'value';
    } else if ((top === 0x7b && c === 0x7d) || (top === 0x5b && c === 0x5d)) {
      i++;
      stack.pop();
    } else return i;
  }
}
