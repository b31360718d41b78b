/** Process footprint from /proc: resident memory and CPU ticks of one PID. */
import { readdirSync, readFileSync } from 'node:fs';

export const CLK_TCK = 100;

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? Number.NaN : Number(m[1]) * 1024;
}

/** VmHWM: the largest resident set the process has had since it started (between samples too). */
export function peakRssBytes(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? Number.NaN : Number(m[1]) * 1024;
}

/** VmRSS split into anonymous memory (heap, stacks) and file-backed pages (the node binary, libraries). */
export function rssParts(pid: number): { anonBytes: number; fileBytes: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status);
    return m === null ? Number.NaN : Number(m[1]) * 1024;
  };
  return { anonBytes: kb('RssAnon'), fileBytes: kb('RssFile') };
}

/**
 * cutime + cstime in clock ticks (fields 16 and 17): CPU of the children the process waited for (the
 * agent's nft and ip runs), which its own utime + stime leave out.
 */
export function childCpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[13]) + Number(fields[14]);
}

/** utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat; the name may hold spaces). */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * CPU time of the process's main thread in ms, from /proc/PID/task/PID/schedstat (nanoseconds, not
 * clock ticks): for Node, the JS thread, without libuv's and ffi-rs's worker threads.
 */
export function mainThreadCpuMs(pid: number): number {
  const schedstat = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8');
  return Number(schedstat.split(' ')[0]) / 1e6;
}

/**
 * CPU time of all the process's live threads in ms, from each /proc/PID/task/TID/schedstat
 * (nanoseconds): precise over a short window, where clock ticks (10 ms) are not. A thread that
 * exited in between is not counted; over an idle window none does.
 */
export function liveThreadsCpuMs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread exited between the listing and the read.
    }
  }
  return ns / 1e6;
}

/** Least-squares slope of y over x. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return Number.NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return num / den;
}
