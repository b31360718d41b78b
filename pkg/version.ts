import { readFileSync } from 'node:fs';

/** The trellis version: package.json in a checkout, dist/version.json in a build. */
export function trellisVersion(): string {
  for (const rel of ['../version.json', '../package.json', '../../package.json']) {
    try {
      const url = new URL(rel, import.meta.url);
      const parsed = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version?: unknown };
      if (typeof parsed.version === 'string' && (parsed.name === undefined || parsed.name === 'trellis')) {
        return parsed.version;
      }
    } catch {
      // Try the next location.
    }
  }
  return '0.0.0-unknown';
}
