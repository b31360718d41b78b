/**
 * What the host firewall check accepts (pkg/firewall/pod-network.ts): the cluster's pod network per
 * family, from the pod CIDRs the route planner accepted, or this node's own pod CIDRs where that would
 * open the underlay. Remembers the last answer, so a peer's change says at once whether the check must
 * run again (the cover grows only when a node outside it appears), and says a fallback once.
 */
import { errorText } from '../error-text.ts';
import { changesPodNetwork, MAX_EXACT, type PodNetwork, podNetwork } from '../firewall/index.ts';
import type { Logger } from '../observe/logger.ts';

export interface ForwardPrefixesDeps {
  /** This node's pod CIDRs. */
  own(): readonly string[];
  /** Every node's pod CIDRs the planner accepted; undefined until a full pass planned. */
  accepted(): readonly string[] | undefined;
  /** Every node's InternalIPs. */
  nodeIPs(): readonly string[];
  /** The subnets this node is connected to (read from its links). */
  connected(): Promise<readonly string[]>;
  log: Logger;
}

export class ForwardPrefixes {
  private readonly deps: ForwardPrefixesDeps;
  private last: PodNetwork | undefined;
  private handed: string | undefined;
  /** What was last said of a fallback (none, at first: nothing is said while the cover is used). */
  private said = JSON.stringify([[], []]);

  constructor(deps: ForwardPrefixesDeps) {
    this.deps = deps;
  }

  /**
   * The prefixes to check now; undefined before the first full pass (the planner's refusals unknown):
   * a check with this node's pod CIDRs then would delete the wider accepts of the last run, only for
   * the pass to put them back.
   */
  async current(): Promise<string[] | undefined> {
    const { deps } = this;
    const own = deps.own();
    const accepted = deps.accepted();
    if (own.length === 0 || accepted === undefined) return undefined;
    let connected: readonly string[];
    try {
      connected = await deps.connected();
    } catch (err) {
      // Not knowing the underlay: the last answer (a passing netlink failure must not narrow the
      // accepts, only for the next check to widen them again), or, with none, none (the caller checks
      // this node's own pod CIDRs, deleting nothing).
      deps.log.debug({ error: errorText(err) }, 'cannot read the connected subnets');
      return this.last?.prefixes;
    }
    const net = podNetwork({ own, accepted, nodeIPs: deps.nodeIPs(), connected });
    this.last = net;
    this.sayNarrowed(net);
    this.handed = net.prefixes.join();
    return net.prefixes;
  }

  /** After a full pass: the prefixes when they differ from those last handed out, else undefined. */
  async changed(): Promise<string[] | undefined> {
    const before = this.handed;
    const now = await this.current();
    return now !== undefined && now.join() !== before ? now : undefined;
  }

  /** A peer changed: whether the prefixes may have (a pod CIDR outside them, an InternalIP inside). */
  peerChanged(accepted: readonly string[], internalIPs: readonly string[]): boolean {
    return this.last !== undefined && changesPodNetwork(this.last, accepted, internalIPs);
  }

  private sayNarrowed(net: PodNetwork): void {
    // Only falling back to this node's own pod CIDRs is a warning: the pod CIDRs one by one (exact)
    // still cover every node's pods.
    const fallback = net.families.filter((f) => f.narrowed !== undefined && f.exact === undefined);
    const exact = net.families.filter((f) => f.exact !== undefined);
    const key = JSON.stringify([fallback.map((f) => f.narrowed), exact.map((f) => f.narrowed)]);
    if (key === this.said) return;
    this.said = key;
    if (fallback.length === 0) {
      this.deps.log.info(
        {
          prefixes: net.prefixes,
          ...(exact.length === 0 ? {} : { oneByOne: exact.map((f) => f.narrowed) }),
        },
        "the host firewall's forward accepts match the cluster's pod network",
      );
      return;
    }
    this.deps.log.warn(
      { prefixes: net.prefixes, why: fallback.map((f) => f.narrowed) },
      `the host firewall's forward accepts match this node's pod CIDRs only, not every node's: one prefix over all of them would reach beyond the pods (why), and they are more than ${MAX_EXACT} prefixes one by one; a NodePort or LoadBalancer connection this node forwards to a pod on another node stays dropped by that firewall`,
    );
  }
}
