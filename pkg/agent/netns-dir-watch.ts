import { existsSync, type FSWatcher, watch } from 'node:fs';
import { basename, join } from 'node:path';
import { errorText } from '../error-text.ts';
import type { Logger } from '../observe/logger.ts';

export interface NetnsDirHandlers {
  /** A file there may be a pinned namespace: 'not-a-netns' asks to be called again shortly. */
  appeared(path: string): 'started' | 'not-a-netns' | 'ignored';
  /** Its file went (the runtime removed the pod's namespace). */
  removed(path: string): void;
}

/**
 * When to look again at a new file that is not a namespace yet (ms after the first look). A runtime
 * pins a namespace by creating the file and then bind-mounting the namespace onto it: inotify sees
 * the creation, nothing sees the mount, so the file is looked at until it is one. containerd and
 * CRI-O create the namespace (unshare) and mount it right after creating the file, in well under a
 * millisecond on an idle node; after ~0.1 s the file is taken for something else (no pair: ADD makes
 * its own).
 */
export const PIN_RETRY_MS = [0, 1, 1, 2, 2, 5, 10, 20, 50] as const;

/**
 * Follows the directory a runtime pins pod namespaces in (inotify, through fs.watch) and says when a
 * namespace appears there and when its file goes. Namespaces there before the start are not
 * reported: their pods are set up already.
 */
export class NetnsDirWatch {
  private readonly dir: string;
  private readonly handlers: NetnsDirHandlers;
  private readonly log: Logger;
  private watcher: FSWatcher | undefined;
  /** Files being looked at again (a retry is scheduled). */
  private readonly pending = new Map<string, NodeJS.Timeout>();

  constructor(dir: string, handlers: NetnsDirHandlers, log: Logger) {
    this.dir = dir;
    this.handlers = handlers;
    this.log = log;
  }

  /** False (and a warning) when the directory cannot be watched: ADD then makes every pair itself. */
  start(): boolean {
    try {
      this.watcher = watch(this.dir, { persistent: false }, (_event, file) => {
        if (file !== null) this.changed(join(this.dir, file));
      });
    } catch (err) {
      this.log.warn(
        { dir: this.dir, error: errorText(err) },
        'cannot watch the pod namespace directory (--netns-dir): veth pairs are made by ADD',
      );
      return false;
    }
    this.watcher.on('error', (err) => {
      this.log.warn(
        { dir: this.dir, error: errorText(err) },
        'watching the pod namespace directory (--netns-dir) failed: veth pairs are made by ADD from now on',
      );
      this.stop();
    });
    return true;
  }

  /** Started and not stopped (the directory removed or a watch error stop it too). */
  get watching(): boolean {
    return this.watcher !== undefined;
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    for (const t of this.pending.values()) clearTimeout(t);
    this.pending.clear();
  }

  private changed(path: string): void {
    const exists = existsSync(path);
    const retry = this.pending.get(path);
    if (retry !== undefined) {
      if (exists) return; // being looked at already
      // Removed while looked at again (unmounted, then removed): the retry would find nothing and
      // stop, and the pair made for it would wait out its TTL instead of going now.
      clearTimeout(retry);
      this.pending.delete(path);
    }
    if (!exists) {
      if (!existsSync(this.dir)) {
        // The directory itself went (inotify reports that last, then nothing more).
        this.log.warn(
          { dir: this.dir },
          'the pod namespace directory (--netns-dir) was removed: veth pairs are made by ADD from now on',
        );
        this.stop();
        return;
      }
      if (basename(path) === basename(this.dir)) {
        // The directory's own removal (inotify names it by its own name), and it is there again: made
        // again before this event was read (a runtime's MkdirAll at its next pod). The watch is on the
        // old one, which says nothing more (the new one may even have its inode number): watch it anew.
        this.stop();
        if (this.start()) {
          this.log.info(
            { dir: this.dir },
            'the pod namespace directory (--netns-dir) was made again: watching the new one',
          );
        }
        return;
      }
      this.handlers.removed(path);
      return;
    }
    this.look(path, 0);
  }

  private look(path: string, attempt: number): void {
    this.pending.delete(path);
    if (this.watcher === undefined) return;
    if (this.handlers.appeared(path) !== 'not-a-netns') return;
    const next = PIN_RETRY_MS[attempt + 1];
    if (next === undefined || !existsSync(path)) return;
    const timer = setTimeout(() => this.look(path, attempt + 1), next);
    timer.unref();
    this.pending.set(path, timer);
  }
}
