import type { Logger } from '../observe/logger.ts';

/** One route (or overlay entry) a full pass could not program, as the log names it. */
export interface RouteTrouble {
  /** What it is, unique in a pass: 'error 10.244.7.0/24', 'conflict fd00:10:244:7::/64'. */
  key: string;
  /** The line's message: what kind of trouble. */
  msg: string;
  /** The line's fields: the route and what stood in its way. */
  fields: Record<string, unknown>;
  /**
   * What must change for it to be said again; default: the fields. An error's text names the
   * nexthop object id of the attempt, new at each retry: its errno is the reason.
   */
  reason?: string;
}

/** The most new troubles said one line each per pass; the rest in one line. */
export const ROUTE_TROUBLE_LINES = 20;

/**
 * Says the routes a full pass could not program when that starts or its reason changes, and when it
 * ends, instead of once per route at every pass. A downed uplink fails every peer's route at each
 * retry (0.2 s to 10 s apart) and a daemon holding pod CIDRs conflicts at every pass: at 5,000 nodes,
 * one line per route per pass buried the line that says why. Meanwhile every pass's 'reconciled' line
 * counts them (routeErrors, conflicts).
 */
export class RouteTroubleLog {
  readonly #log: Logger;
  readonly #maxLines: number;
  /** Said troubles: key -> their reason (a new one is said again). */
  #said = new Map<string, string>();

  constructor(log: Logger, maxLines = ROUTE_TROUBLE_LINES) {
    this.#log = log;
    this.#maxLines = maxLines;
  }

  /** A full pass's troubles: all of them, every pass (what is missing is over). */
  pass(troubles: readonly RouteTrouble[]): void {
    const next = new Map<string, string>();
    const fresh: RouteTrouble[] = [];
    for (const t of troubles) {
      const text = t.reason ?? JSON.stringify(t.fields);
      next.set(t.key, text);
      if (this.#said.get(t.key) !== text) fresh.push(t);
    }
    for (const t of fresh.slice(0, this.#maxLines)) this.#log.warn(t.fields, t.msg);
    if (fresh.length > this.#maxLines) {
      const rest = fresh.slice(this.#maxLines);
      this.#log.warn(
        { more: rest.length, first: rest.slice(0, 5).map((t) => t.key) },
        'more routes could not be programmed than are said one by one (the pass line counts them)',
      );
    }
    const over = [...this.#said.keys()].filter((k) => !next.has(k));
    if (over.length > 0) {
      this.#log.info(
        { count: over.length, first: over.slice(0, 10) },
        'routes that could not be programmed are no longer in the way (programmed, or their node gone)',
      );
    }
    this.#said = next;
  }
}
