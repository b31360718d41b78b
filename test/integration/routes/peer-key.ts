import { ip, type NetnsPool, type TestNetns } from '../../support/netns.ts';

/**
 * The node namespace and the kernel views the tests of one peer's route key share
 * (peer-replace.test.ts, foreign-metric.test.ts).
 */

export type FamilyFlag = '-4' | '-6';

/** A route on the key, its nexthop object (if any) resolved to its gateway. */
export interface KeyRoute {
  via: string | undefined;
  /** 'unicast' when the kernel names none. */
  type: string;
  protocol: string;
  /** 0 when the kernel leaves it out (IPv4's default). */
  metric: number;
}

/** The routes on exactly `key`, in lookup order. */
export function routesOnKey(ns: TestNetns, flag: FamilyFlag, key: string): KeyRoute[] {
  const listed = JSON.parse(ip(ns.name, '-j', flag, 'route', 'show', 'exact', key)) as {
    gateway?: string;
    type?: string;
    protocol: string;
    metric?: number;
    nhid?: number;
  }[];
  return listed.map((r) => {
    let via = r.gateway;
    if (via === undefined && r.nhid !== undefined) {
      const nh = JSON.parse(ip(ns.name, '-j', 'nexthop', 'show', 'id', String(r.nhid))) as {
        gateway?: string;
      }[];
      via = nh[0]?.gateway;
    }
    return { via, type: r.type ?? 'unicast', protocol: r.protocol, metric: r.metric ?? 0 };
  });
}

/** A node namespace (one end of a linked pair) with `self` on its eth0's subnet. */
export function nodeWithAddress(pool: NetnsPool, prefix: string, flag: FamilyFlag, self: string): TestNetns {
  const [a] = pool.addLinkedPair(prefix);
  const len = flag === '-4' ? 24 : 64;
  ip(a!.name, 'addr', 'add', `${self}/${len}`, 'dev', 'eth0', ...(flag === '-6' ? ['nodad'] : []));
  return a!;
}

/** Removes every route on the key, ours with their nexthop objects (`ip route flush` refuses routes naming one). */
export function clearKey(ns: TestNetns, flag: FamilyFlag, key: string): void {
  ip(ns.name, 'nexthop', 'flush', 'protocol', '126');
  ip(ns.name, flag, 'route', 'flush', 'exact', key);
}
