import { describe, expect, it } from 'vitest';
import { deleteLinkIfNamed } from '../../../pkg/datapath/delete-link.ts';
import type { LinkInfo } from '../../../pkg/datapath/ports.ts';
import { LinkNotFoundError, NetlinkError } from '../../../pkg/netlink/errors.ts';

const link: LinkInfo = {
  index: 6,
  name: 'trl0123456789ab',
  kind: 'veth',
  mac: '02:00:00:00:00:06',
  mtu: 1500,
  up: true,
};

/** A host whose link 6 is `link` when looked at, and whose delete does `onDelete`. */
function host(onDelete: () => Promise<void>, seen: LinkInfo | undefined = link) {
  const deleted: number[] = [];
  return {
    deleted,
    getLinkByIndex: async (i: number) => (i === seen?.index ? seen : undefined),
    deleteLink: async (i: number) => {
      await onDelete();
      deleted.push(i);
    },
  };
}

describe('deleteLinkIfNamed', () => {
  it('deletes the link still there under its name; another name at that index is left alone', async () => {
    const h = host(async () => {});
    await deleteLinkIfNamed(h, 6, 'trl0123456789ab');
    expect(h.deleted).toEqual([6]);
    const other = host(async () => {}, { ...link, name: 'eth1' });
    await deleteLinkIfNamed(other, 6, 'trl0123456789ab');
    expect(other.deleted).toEqual([]);
  });

  it('a link gone between the look and the delete (ENODEV: its pod namespace removed) is done, not a failure', async () => {
    const h = host(async () => {
      throw new LinkNotFoundError('RTM_DELLINK #6');
    });
    await expect(deleteLinkIfNamed(h, 6, 'trl0123456789ab')).resolves.toBeUndefined();
  });

  it('any other refusal is the caller’s to report', async () => {
    const h = host(async () => {
      throw new NetlinkError('EPERM', 'RTM_DELLINK #6');
    });
    await expect(deleteLinkIfNamed(h, 6, 'trl0123456789ab')).rejects.toThrow(/EPERM/);
  });
});
