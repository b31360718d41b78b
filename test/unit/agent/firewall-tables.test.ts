import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  DELAY_MS,
  FirewallTableTrigger,
  MIN_GAP_MS,
  type SubscribeTable,
} from '../../../pkg/agent/firewall-tables.ts';
import type { NftablesEvent } from '../../../pkg/datapath/ports.ts';

type Listener = (ev: NftablesEvent | { type: 'overflow' }) => void;

function setup() {
  const subs = new Map<string, { cb: Listener; closed: boolean }>();
  const subscribe: SubscribeTable = (cb, table) => {
    const sub = { cb, closed: false };
    subs.set(`${table.family} ${table.name}`, sub);
    return {
      close: () => {
        sub.closed = true;
      },
    };
  };
  let checks = 0;
  const trigger = new FirewallTableTrigger({ subscribe, onChange: () => checks++, now: () => Date.now() });
  /** A rule change in table `key` ("family name") as its subscription hears it; `of`: another table's. */
  const change = (key: string, of = key): void => {
    const [family, table] = of.split(' ');
    subs.get(key)!.cb({
      type: 'change',
      change: 'new',
      object: 'rule',
      family: Number(family),
      table: table!,
      portid: 7,
    });
  };
  return { trigger, subs, change, checks: () => checks };
}

describe('FirewallTableTrigger', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('follows exactly the tables it is given, closing the others', () => {
    const { trigger, subs } = setup();
    trigger.follow([
      { family: 2, name: 'filter' },
      { family: 10, name: 'filter' },
    ]);
    expect([...subs.keys()]).toEqual(['2 filter', '10 filter']);
    trigger.follow([{ family: 2, name: 'filter' }]);
    expect(subs.get('10 filter')!.closed).toBe(true);
    expect(subs.get('2 filter')!.closed).toBe(false);
    expect(trigger.size).toBe(1);
    trigger.close();
    expect(subs.get('2 filter')!.closed).toBe(true);
    expect(trigger.size).toBe(0);
  });

  it('a table it could not watch (EMFILE) is tried again at the next follow', () => {
    let failures = 1;
    const tries: string[] = [];
    const trigger = new FirewallTableTrigger({
      subscribe: (_cb, table) => {
        tries.push(table.name);
        if (failures-- > 0) return undefined;
        return { close: () => undefined };
      },
      onChange: () => undefined,
      now: () => Date.now(),
    });
    trigger.follow([{ family: 2, name: 'filter' }]);
    expect(trigger.size).toBe(0);
    trigger.follow([{ family: 2, name: 'filter' }]);
    expect(tries).toEqual(['filter', 'filter']);
    expect(trigger.size).toBe(1);
    trigger.close();
  });

  it('a burst of changes asks for one check after DELAY_MS; checks stay MIN_GAP_MS apart', () => {
    const { trigger, change, checks } = setup();
    trigger.follow([{ family: 2, name: 'filter' }]);
    for (let i = 0; i < 20; i++) change('2 filter');
    vi.advanceTimersByTime(DELAY_MS - 1);
    expect(checks()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(checks()).toBe(1);
    // The next change soon after: held until MIN_GAP_MS after the last check.
    change('2 filter');
    vi.advanceTimersByTime(MIN_GAP_MS - 1);
    expect(checks()).toBe(1);
    vi.advanceTimersByTime(1);
    expect(checks()).toBe(2);
    trigger.close();
  });

  it("another table's rules and chains (kube-proxy's churn, which the kernel lets through) ask for nothing", () => {
    const { trigger, change, checks } = setup();
    trigger.follow([{ family: 2, name: 'filter' }]);
    for (let i = 0; i < 20; i++) {
      change('2 filter', '2 kube-proxy');
      change('2 filter', '2 nat');
      change('2 filter', '10 filter'); // same name, the other family
    }
    vi.advanceTimersByTime(DELAY_MS * 10);
    expect(checks()).toBe(0);
    change('2 filter');
    vi.advanceTimersByTime(DELAY_MS);
    expect(checks()).toBe(1);
    trigger.close();
  });

  it("a transaction's end alone asks for nothing; an overflow (changes maybe lost) does", () => {
    const subs: Listener[] = [];
    let checks = 0;
    const trigger = new FirewallTableTrigger({
      subscribe: (cb) => {
        subs.push(cb);
        return { close: () => {} };
      },
      onChange: () => checks++,
    });
    trigger.follow([{ family: 1, name: 'firewalld' }]);
    subs[0]!({ type: 'generation', portid: 9 });
    vi.advanceTimersByTime(DELAY_MS * 2);
    expect(checks).toBe(0);
    subs[0]!({ type: 'overflow' });
    vi.advanceTimersByTime(DELAY_MS);
    expect(checks).toBe(1);
    trigger.close();
  });
});
