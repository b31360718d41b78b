import type { NetlinkHandle } from './ports.ts';

/**
 * Deletes the link at `index` if it is still there under one of `names`. Deletions that run later
 * (off the critical path) go by index and check the name first: a link deleted meanwhile by someone
 * else is done, not a failure (also when that happens between the look and the delete), and a link
 * that took the index or the name since is another's.
 */
export async function deleteLinkIfNamed(
  host: Pick<NetlinkHandle, 'getLinkByIndex' | 'deleteLink'>,
  index: number,
  ...names: string[]
): Promise<void> {
  const current = await host.getLinkByIndex(index);
  if (current === undefined || !names.includes(current.name)) return;
  try {
    await host.deleteLink(index);
  } catch (err) {
    // Gone between the look and the delete (its pod's namespace removed right after DEL takes the
    // pair with it): done all the same.
    if ((err as { errno?: string }).errno !== 'ENODEV') throw err;
  }
}

/** deleteLinkIfNamed for BackgroundDeleter's work: nobody waits for it (deleteLinkInBackground). */
export function deleteLinkIfNamedInBackground(
  host: Pick<NetlinkHandle, 'getLinkByIndex' | 'deleteLink' | 'deleteLinkInBackground'>,
  index: number,
  ...names: string[]
): Promise<void> {
  const remove = host.deleteLinkInBackground ?? host.deleteLink;
  return deleteLinkIfNamed(
    { getLinkByIndex: (i) => host.getLinkByIndex(i), deleteLink: (i) => remove.call(host, i) },
    index,
    ...names,
  );
}
