/**
 * A reading of nftables state, taken again only when it may have changed. The namespace's nf_tables
 * ruleset generation (NFT_MSG_GETGEN, pkg/netlink NftSetWriter.generation) moves on with every
 * committed transaction, whatever its table: while it stands still and the question is the same, the
 * last answer is still the kernel's, and no `nft` needs to run. The masquerade table's check and the
 * host firewall's share it (cmd/agent/adapters.ts, pkg/firewall/read-on-change.ts).
 */
export interface ReadOnChangeOptions<A extends readonly unknown[]> {
  /** The ruleset generation; a failure means "read". */
  generation: () => Promise<number>;
  /** Whether two calls ask the same question. */
  sameArgs: (a: A, b: A) => boolean;
  /** Whether an answer may be kept now (default: always); false reads every time. */
  cacheable?: () => boolean;
  /** What of the arguments to keep for sameArgs (default: as given): copies of what the caller may change. */
  keep?: (args: A) => A;
}

export function readOnChange<A extends readonly unknown[], R>(
  read: (...args: A) => Promise<R>,
  o: ReadOnChangeOptions<A>,
): (...args: A) => Promise<R> {
  let last: { generation: number; args: A; value: R } | undefined;
  return async (...args: A): Promise<R> => {
    // Before the reading: a transaction committed while it is taken, even one it already shows,
    // moves the generation on, and the next call reads again.
    const generation = await o.generation().catch(() => undefined);
    const cacheable = generation !== undefined && (o.cacheable?.() ?? true);
    if (cacheable && last !== undefined && last.generation === generation && o.sameArgs(last.args, args)) {
      return last.value;
    }
    last = undefined;
    const value = await read(...args);
    if (cacheable) last = { generation, args: o.keep?.(args) ?? args, value };
    return value;
  };
}
