import { fstatSync, type Stats, statSync } from 'node:fs';

/**
 * True when `path` is the network namespace this process runs in (the node's host namespace).
 * CNI_NETNS comes from the runtime; a path like /proc/self/ns/net (resolved by the agent, so it names
 * the agent's own namespace) or /proc/1/ns/net would make ADD create the "pod" interface, its
 * addresses and a default route via 169.254.1.1 in the host namespace, replacing the node's own
 * default route. Namespaces are identified by the nsfs inode (dev + ino) that stat follows the link to.
 */
export function isOwnNetns(path: string, ownPath = '/proc/thread-self/ns/net'): boolean {
  return sameNamespaceAsOwn(() => statSync(path), ownPath);
}

/** isOwnNetns for a namespace fd already open (fstat: no second path lookup). */
export function isOwnNetnsFd(fd: number, ownPath = '/proc/thread-self/ns/net'): boolean {
  return sameNamespaceAsOwn(() => fstatSync(fd), ownPath);
}

function sameNamespaceAsOwn(target: () => Stats, ownPath: string): boolean {
  try {
    const t = target();
    const own = statSync(ownPath);
    return t.dev === own.dev && t.ino === own.ino;
  } catch {
    return false; // missing or unreadable: the netns checks that follow report it
  }
}
