import type { NetlinkHandle } from './ports.ts';

/**
 * Deletes the link at `index` if it is still there under one of `names`. Deletions that run later
 * (off the critical path) go by index and check the name first: a link deleted meanwhile by someone
 * else is done, not a failure, and a link that took the index or the name since is another's.
 */
export async function deleteLinkIfNamed(
  host: Pick<NetlinkHandle, 'getLinkByIndex' | 'deleteLink'>,
  index: number,
  ...names: string[]
): Promise<void> {
  const current = await host.getLinkByIndex(index);
  if (current !== undefined && names.includes(current.name)) await host.deleteLink(index);
}
