import { describe, expect, it, vi } from 'vitest';
import { BackgroundDeleter } from '../../../pkg/datapath/background-deleter.ts';

describe('BackgroundDeleter', () => {
  it('tries a failed deletion again after 1 s, 10 s and 60 s, then leaves it (said each time)', async () => {
    vi.useFakeTimers();
    try {
      const errors: [string, boolean][] = [];
      const d = new BackgroundDeleter((name, _err, retried) => void errors.push([name, retried]));
      let tries = 0;
      const work = async (): Promise<void> => {
        tries++;
        throw new Error('RTM_DELLINK: ENOMEM');
      };
      d.schedule('trl1234', work, '/run/netns/pod');
      await vi.advanceTimersByTimeAsync(0);
      expect(tries).toBe(1);
      // Known while it waits (GC starts no second chain, status lists it), but an ADD needing the
      // name does not wait for the retry.
      expect(d.isPending('trl1234')).toBe(true);
      expect(d.pendingNames()).toEqual(['trl1234']);
      let waited = false;
      void d.wait('trl1234').then(() => (waited = true));
      await vi.advanceTimersByTimeAsync(0);
      expect(waited).toBe(true);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(tries).toBe(2);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(tries).toBe(3);
      await vi.advanceTimersByTimeAsync(60_000);
      expect(tries).toBe(4);
      await vi.advanceTimersByTimeAsync(600_000);
      expect(tries).toBe(4);
      expect(errors).toEqual([
        ['trl1234', true],
        ['trl1234', true],
        ['trl1234', true],
        ['trl1234', false],
      ]);
      expect(d.isPending('trl1234')).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a retry that succeeds ends it; drain drops retries not yet due', async () => {
    vi.useFakeTimers();
    try {
      const d = new BackgroundDeleter(() => undefined);
      let tries = 0;
      d.schedule('a', async () => {
        if (++tries === 1) throw new Error('EBUSY');
      });
      await vi.advanceTimersByTimeAsync(1_000);
      expect(tries).toBe(2);
      await vi.advanceTimersByTimeAsync(100_000);
      expect(tries).toBe(2);

      let other = 0;
      d.schedule('b', async () => {
        other++;
        throw new Error('EBUSY');
      });
      await vi.advanceTimersByTimeAsync(0);
      await d.drain();
      await vi.advanceTimersByTimeAsync(100_000);
      expect(other).toBe(1);
      expect(d.isPending('b')).toBe(false);
      // A deletion failing once stopped is not said to be tried again.
      const said: boolean[] = [];
      const stopped = new BackgroundDeleter((_n, _e, retried) => void said.push(retried));
      await stopped.drain();
      stopped.schedule('c', async () => {
        throw new Error('EBUSY');
      });
      await vi.advanceTimersByTimeAsync(0);
      expect(said).toEqual([false]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('an ADD into the namespace of a pair whose deletion waits for its retry runs the retry at once, and waits for it', async () => {
    vi.useFakeTimers();
    try {
      const d = new BackgroundDeleter(() => undefined);
      let tries = 0;
      d.schedule(
        'trl1234',
        async () => {
          if (++tries === 1) throw new Error('RTM_DELLINK: EBUSY');
        },
        '/run/netns/reused',
      );
      await vi.advanceTimersByTimeAsync(0);
      expect(tries).toBe(1);
      // Another namespace: nothing of this pair is in its way.
      await d.waitForNetns('/run/netns/other');
      expect(tries).toBe(1);
      // The runtime reuses the pod's namespace (cnitool, podman): the old pod end must go first.
      let done = false;
      void d.waitForNetns('/run/netns/reused').then(() => (done = true));
      await vi.advanceTimersByTimeAsync(0);
      expect(tries).toBe(2);
      expect(done).toBe(true);
      expect(d.isPending('trl1234')).toBe(false);
      // The retry's own timer no longer fires a third try.
      await vi.advanceTimersByTimeAsync(100_000);
      expect(tries).toBe(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a deletion of the same name scheduled without a namespace (a DEL repeated without CNI_NETNS) keeps the one a waiting retry knows', async () => {
    vi.useFakeTimers();
    try {
      const d = new BackgroundDeleter(() => undefined);
      let tries = 0;
      const work = async () => {
        if (++tries <= 2) throw new Error('RTM_DELLINK: EBUSY');
      };
      d.schedule('trl1234', work, '/run/netns/reused');
      await vi.advanceTimersByTimeAsync(0);
      d.schedule('trl1234', work); // fails too: both wait for a retry
      await vi.advanceTimersByTimeAsync(0);
      expect(tries).toBe(2);
      // An ADD into the pod's namespace still finds the pair in its way and runs the retry now.
      let done = false;
      void d.waitForNetns('/run/netns/reused').then(() => (done = true));
      await vi.advanceTimersByTimeAsync(0);
      expect(tries).toBe(3);
      expect(done).toBe(true);
      await vi.advanceTimersByTimeAsync(100_000);
      expect(d.pendingNames()).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('ADDs into the namespace that run the retry early keep its place in the schedule: the spaced tries still come', async () => {
    vi.useFakeTimers();
    try {
      const said: boolean[] = [];
      const d = new BackgroundDeleter((_name, _err, retried) => said.push(retried));
      let tries = 0;
      d.schedule(
        'trl1234',
        async () => {
          tries++;
          throw new Error('RTM_DELLINK: EBUSY');
        },
        '/run/netns/reused',
      );
      await vi.advanceTimersByTimeAsync(0);
      // A runtime retrying its ADD into the namespace, three times at once: each runs a try early.
      for (let i = 0; i < 3; i++) await d.waitForNetns('/run/netns/reused');
      expect(tries).toBe(4);
      expect(said).toEqual([true, true, true, true]);
      expect(d.isPending('trl1234')).toBe(true);
      // The timer's schedule is still whole: 1 s, 10 s and 60 s, then it is left.
      await vi.advanceTimersByTimeAsync(1_000);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(said.at(-1)).toBe(true);
      await vi.advanceTimersByTimeAsync(60_000);
      expect(tries).toBe(7);
      expect(said.at(-1)).toBe(false);
      expect(d.isPending('trl1234')).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });
});
