import { describe, expect, it } from 'vitest';
import { type RouteTrouble, RouteTroubleLog } from '../../../pkg/agent/route-trouble-log.ts';
import { capturedLog } from '../../support/captured-log.ts';

const failed = (dst: string, error = 'ENETDOWN: Network is down'): RouteTrouble => ({
  key: `error ${dst}`,
  msg: 'route could not be programmed',
  fields: { route: dst, error },
});
const held = (dst: string): RouteTrouble => ({
  key: `conflict ${dst}`,
  msg: 'route not programmed: its prefix is held by a route trellis does not own',
  fields: { route: dst, protocol: 'bgp', gateway: '10.0.0.9' },
});
/** The pino writes are synchronous into the PassThrough, whose 'data' runs on the next tick. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('RouteTroubleLog', () => {
  it('says a failing route once, again only when its reason changes, and when it is over', async () => {
    const { log, lines } = capturedLog();
    const t = new RouteTroubleLog(log);
    t.pass([failed('10.244.2.0/24'), held('10.244.3.0/24')]);
    t.pass([failed('10.244.2.0/24'), held('10.244.3.0/24')]); // every retry of the pass: nothing new
    t.pass([failed('10.244.2.0/24', 'ENODEV: No such device'), held('10.244.3.0/24')]);
    t.pass([held('10.244.3.0/24')]);
    await settle();
    expect(lines.map((l) => [l.level, l.msg, l.route ?? l.first])).toEqual([
      ['warn', 'route could not be programmed', '10.244.2.0/24'],
      ['warn', 'route not programmed: its prefix is held by a route trellis does not own', '10.244.3.0/24'],
      ['warn', 'route could not be programmed', '10.244.2.0/24'],
      [
        'info',
        'routes that could not be programmed are no longer in the way (programmed, or their node gone)',
        ['error 10.244.2.0/24'],
      ],
    ]);
    expect(lines[2]).toMatchObject({ error: 'ENODEV: No such device' });
  });

  it('compares on the reason when one is given: a retry of the same failure with a new nexthop id is not said again', async () => {
    const { log, lines } = capturedLog();
    const t = new RouteTroubleLog(log);
    const attempt = (id: number, errno = 'ENETDOWN'): RouteTrouble => ({
      ...failed(
        '10.244.2.0/24',
        `RTM_NEWNEXTHOP id ${id} via 10.100.0.12 dev #2 for 10.244.2.0/24: ${errno}`,
      ),
      reason: errno,
    });
    t.pass([attempt(1)]);
    t.pass([attempt(3)]);
    t.pass([attempt(5, 'ENODEV')]);
    await settle();
    expect(lines.map((l) => l.error)).toEqual([
      'RTM_NEWNEXTHOP id 1 via 10.100.0.12 dev #2 for 10.244.2.0/24: ENETDOWN',
      'RTM_NEWNEXTHOP id 5 via 10.100.0.12 dev #2 for 10.244.2.0/24: ENODEV',
    ]);
  });

  it('a pass that fails thousands of routes at once says the first ones and one line for the rest', async () => {
    const { log, lines } = capturedLog();
    const t = new RouteTroubleLog(log, 3);
    const all = Array.from({ length: 5000 }, (_, i) => failed(`10.${(i >> 8) + 1}.${i & 255}.0/24`));
    t.pass(all);
    t.pass(all);
    await settle();
    expect(lines).toHaveLength(4);
    expect(lines.slice(0, 3).map((l) => l.route)).toEqual(['10.1.0.0/24', '10.1.1.0/24', '10.1.2.0/24']);
    expect(lines[3]).toMatchObject({
      level: 'warn',
      more: 4997,
      first: [
        'error 10.1.3.0/24',
        'error 10.1.4.0/24',
        'error 10.1.5.0/24',
        'error 10.1.6.0/24',
        'error 10.1.7.0/24',
      ],
    });
    t.pass([]);
    await settle();
    expect(lines[4]).toMatchObject({ level: 'info', count: 5000 });
    expect(lines[4]?.first).toHaveLength(10);
  });
});
