import type { NetlinkHandle } from './ports.ts';

/**
 * Deletes the link at `index` if it is still there under one of `names`. Deletions that run later
 * (off the critical path) go by index and check the name first: a link deleted meanwhile by someone
 * else is done, not a failure (also when that happens between the look and the delete), and a link
 * that took the index or the name since is another's.
 */
export async function deleteLinkIfNamed(
  host: Pick<NetlinkHandle, 'getLinkByIndex' | 'deleteLink' | 'deleteLinkInBackground'>,
  index: number,
  ...names: string[]
): Promise<void> {
  return deleteIfNamed(host, index, names, (i) => host.deleteLink(i));
}

/** deleteLinkIfNamed for BackgroundDeleter's work: nobody waits for it (deleteLinkInBackground). */
export async function deleteLinkIfNamedInBackground(
  host: Pick<NetlinkHandle, 'getLinkByIndex' | 'deleteLink' | 'deleteLinkInBackground'>,
  index: number,
  ...names: string[]
): Promise<void> {
  return deleteIfNamed(host, index, names, (i) =>
    (host.deleteLinkInBackground ?? host.deleteLink).call(host, i),
  );
}

async function deleteIfNamed(
  host: Pick<NetlinkHandle, 'getLinkByIndex'>,
  index: number,
  names: readonly string[],
  remove: (index: number) => Promise<void>,
): Promise<void> {
  const current = await host.getLinkByIndex(index);
  if (current === undefined || !names.includes(current.name)) return;
  try {
    await remove(index);
  } catch (err) {
    // Gone between the look and the delete (its pod's namespace removed right after DEL takes the
    // pair with it): done all the same.
    if ((err as { errno?: string }).errno !== 'ENODEV') throw err;
  }
}
