// The raw socket and the protocol numbers from their own files: the package's index also loads its
// generic netlink, nl80211 and rtnetlink struct codecs (~6 MB RSS, 1.7 MB of heap) that trellis does not use.
import { Protocol } from 'netlink/dist/constants.js';
import { RawNetlinkSocket } from 'netlink/dist/raw.js';
import { errorText } from '../error-text.ts';
import { NLM_F, NLMSG_DONE, NLMSG_ERROR } from './constants.ts';
import { errorFromErrno, errorFromPackage, NetlinkError, type OpText, opText } from './errors.ts';
import { fdOfSocket, netlinkInode } from './procfs.ts';
import {
  decodeErrno,
  decodeMessages,
  type EncodableMessage,
  encodeMessage,
  encodeMessages,
  type RawMessage,
} from './wire.ts';

/**
 * One rtnetlink socket with request/ACK bookkeeping by sequence number.
 *
 * Only the package's raw socket is used (the native fd, poll and sendmsg); framing, sequence
 * numbers and errno mapping are ours, so that many requests can travel in ONE datagram (the kernel
 * processes them in order inside a single sendmsg) and replies are demultiplexed without parsing
 * into the package's generic objects.
 *
 * The socket binds to the network namespace of the thread that creates it, for its whole life.
 *
 * The receive buffer must never overflow: when the kernel drops a message for a socket it flags
 * ENOBUFS on it, epoll reports EPOLLERR, and netlink@0.3.0's poll handler then throws a C++
 * exception while building the error (ErrnoException with a NULL syscall name) and the process
 * aborts. So request traffic is windowed (MAX_INFLIGHT single requests, LANES datagrams of a burst
 * with one ACK each), and event sockets need `prepareFd` to set NETLINK_NO_ENOBUFS (pkg/netns does).
 */

/** Asked for; the kernel caps SO_RCVBUF at net.core.rmem_max (prepareFd may force more). */
const RECV_BUFFER = 4 << 20;
/** Requests per datagram and datagrams in flight in a burst. */
const PER_DATAGRAM = 64;
const LANES = 4;
/** Outstanding single requests: 128 ACKs fit a default 208 KiB receive buffer with room to spare. */
const MAX_INFLIGHT = 128;
const MAX_DUMP_RETRIES = 5;
const noop = (): void => undefined;

export interface Request {
  type: number;
  flags: number;
  body: readonly Uint8Array[];
  /** For errors: 'RTM_NEWROUTE 10.244.2.0/24'. */
  op: OpText;
}

/**
 * The requests of a burst: an array, or requests made one at a time as their datagram is sent (a
 * cold pass's 10,000 routes and objects would otherwise all be alive, bodies and all, until the
 * last ACK: promoted out of the agent's small young generation, the peak of its start).
 */
export interface Requests {
  readonly length: number;
  at(index: number): Request | undefined;
}

export interface SocketOptions {
  /** The netlink family: NETLINK_ROUTE (0) unless given (nf_tables notifications: NETLINK_NETFILTER). */
  protocol?: number;
  /** RTNLGRP_* multicast groups to join (event sockets). */
  groups?: readonly number[];
  /** Groups joined only where the kernel has them (EINVAL from an older kernel is not an error). */
  optionalGroups?: readonly number[];
  /** Unsolicited messages (notifications). */
  onNotification?: (msg: RawMessage) => void;
  /** Socket errors reported by the package (send failures). */
  onError?: (err: NetlinkError) => void;
  /** Keep the event loop alive for the socket's whole life. */
  ref?: boolean;
  /** SO_RCVBUF (default 4 MiB, capped by net.core.rmem_max). */
  recvBufferSize?: number;
  /**
   * Called once, synchronously, with the socket's fd (found through /proc) before it is used:
   * the place for setsockopt calls the package does not offer (pkg/netns: NETLINK_NO_ENOBUFS,
   * SO_RCVBUFFORCE, NETLINK_CAP_ACK).
   */
  prepareFd?: (fd: number, wants: SocketWants) => SocketProbe | undefined;
  /**
   * A socket filter (socket-filter.ts, skip-filter.ts) for prepareFd to attach. Without a prepareFd
   * it is not attached: consumers of a filtered socket still check every message.
   */
  filter?: SocketFilter;
}

/**
 * A classic BPF program, or programs in order of preference: the first the kernel takes is attached
 * (a longer one can exceed the socket's option memory: ENOMEM).
 */
export type SocketFilter = Buffer | readonly Buffer[];

/** What the socket asks of its prepareFd hook beyond the hook's own options. */
export interface SocketWants {
  /** Attach with SO_ATTACH_FILTER. */
  filter?: SocketFilter;
}

/** What a prepareFd hook can tell about the socket later. */
export interface SocketProbe {
  /** Messages the kernel dropped for this socket (SO_MEMINFO); undefined when unknown. */
  drops?(): number | undefined;
}

interface Pending {
  op: OpText;
  parts: RawMessage[];
  /** A streamed dump's consumer: each part goes here as it arrives instead of into parts. */
  onPart?: (msg: RawMessage) => void;
  interrupted: boolean;
  resolve(parts: RawMessage[]): void;
  reject(err: NetlinkError): void;
}

export class RtnlSocket {
  /** From prepareFd, when it returned one. */
  readonly probe: SocketProbe | undefined;
  private readonly raw: RawNetlinkSocket;
  private readonly pending = new Map<number, Pending>();
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private dumping: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly onNotification: ((msg: RawMessage) => void) | undefined;
  private readonly keepRef: boolean;
  private inflight = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(opts: SocketOptions = {}) {
    // recvBufferSize/sendBufferSize are typed as required by the package; 0 keeps the default.
    this.raw = new RawNetlinkSocket(opts.protocol ?? Protocol.ROUTE, {
      recvBufferSize: opts.recvBufferSize ?? RECV_BUFFER,
      sendBufferSize: 0,
    });
    try {
      if (opts.prepareFd !== undefined) {
        const inode = netlinkInode(this.raw.address().port, opts.protocol ?? Protocol.ROUTE);
        const fd = inode === undefined ? undefined : fdOfSocket(inode);
        if (fd === undefined) throw new NetlinkError('ENOENT', 'locating the netlink socket fd in /proc');
        this.probe =
          opts.prepareFd(fd, opts.filter === undefined ? {} : { filter: opts.filter }) ?? undefined;
      }
      for (const g of opts.groups ?? []) this.raw.addMembership(g);
      for (const g of opts.optionalGroups ?? []) {
        try {
          this.raw.addMembership(g);
        } catch {
          // An older kernel without this group: its events simply never come.
        }
      }
    } catch (e) {
      this.raw.close();
      throw e;
    }
    this.onNotification = opts.onNotification;
    // Only the kernel's (port 0): a datagram another process sent (where the socket could not be
    // connected to the kernel, pkg/netns/kernel-peer.ts) is neither a reply nor a notification.
    this.raw.on('message', (buf: Buffer, rinfo: { port: number }) => {
      if (rinfo.port === 0) this.receive(buf);
    });
    this.raw.on('error', (err: unknown) => {
      const e = errorFromPackage(err, 'netlink socket');
      this.failAll(e);
      opts.onError?.(e);
    });
    // The native socket starts referenced; hold the event loop only while requests are pending
    // (or always, for a subscription that asked for it).
    this.keepRef = opts.ref === true;
    if (!this.keepRef) this.raw.unref();
  }

  /** The socket's netlink port id (the kernel names it in notifications of what this socket did). */
  get port(): number {
    return this.raw.address().port;
  }

  /**
   * A non-dump request; resolves with any replies once the kernel ACKs it. At most MAX_INFLIGHT
   * are outstanding (the rest wait, in order), so callers firing thousands at once cannot overflow
   * the receive buffer with ACKs.
   */
  async request(req: Request): Promise<RawMessage[]> {
    if (this.inflight >= MAX_INFLIGHT) await new Promise<void>((go) => this.waiting.push(go));
    this.inflight++;
    try {
      const [promise, buf, seq] = this.prepare(req, NLM_F.REQUEST | NLM_F.ACK | req.flags);
      this.send([buf], [seq], [req.op]);
      return await promise;
    } finally {
      this.inflight--;
      this.waiting.shift()?.();
    }
  }

  /** A dump (NLM_F_DUMP); dumps on one socket are serialized (the kernel runs one at a time). */
  dump(req: Request): Promise<RawMessage[]> {
    return this.serialDump(req, undefined);
  }

  /**
   * A dump whose parts go to visit as each datagram arrives, none of them kept: a caller that only
   * looks at each part once holds a few hundred at a time instead of thousands, so they die young
   * instead of being promoted to the old generation (a 5,000-route resync promoted ~4 MB per pass).
   * restart is called before visit sees the parts again, when an interrupted dump is retried.
   */
  async streamDump(req: Request, visit: (msg: RawMessage) => void, restart: () => void): Promise<void> {
    await this.serialDump(req, { visit, restart });
  }

  private serialDump(
    req: Request,
    stream: { visit: (msg: RawMessage) => void; restart: () => void } | undefined,
  ): Promise<RawMessage[]> {
    const run = async (): Promise<RawMessage[]> => {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) stream?.restart();
        // No NLM_F_ACK: a dump ends with NLMSG_DONE (which carries the errno of a failed dump).
        const [promise, buf, seq] = this.prepare(req, NLM_F.REQUEST | NLM_F.DUMP | req.flags, stream?.visit);
        this.send([buf], [seq], [req.op]);
        const parts = await promise.catch((e: unknown) => e as NetlinkError);
        if (!(parts instanceof NetlinkError)) return parts;
        // NLM_F_DUMP_INTR: the table changed while it was dumped; a retry gives a consistent view.
        if (parts.errno !== 'EINTR' || attempt >= MAX_DUMP_RETRIES) throw parts;
      }
    };
    const result = this.dumping.then(run, run);
    this.dumping = result.catch(() => undefined);
    return result;
  }

  /**
   * Many requests, pipelined: PER_DATAGRAM messages per sendmsg, LANES datagrams in flight. Only
   * the last message of a datagram asks for an ACK: the kernel handles a datagram's messages in
   * order and answers a failed one with NLMSG_ERROR regardless, so that single ACK proves every
   * earlier message without an error succeeded (5,000 routes cost ~80 ACKs instead of 5,000).
   * Resolves with one entry per request (undefined = success).
   */
  async burst(reqs: Requests): Promise<(NetlinkError | undefined)[]> {
    const results = new Array<NetlinkError | undefined>(reqs.length);
    let next = 0;
    const sendChunk = (start: number, count: number): Promise<void> =>
      new Promise<void>((done) => {
        const seqs: number[] = [];
        const settleRest = (): void => {
          // Everything before the ACKed message that got no error succeeded.
          for (const s of seqs) this.finish(s, undefined);
          done();
        };
        // The chunk's requests made before any is registered: one that cannot be made (a lazy
        // source's encoding refusing its route) is that request's error, not a chunk left half
        // registered and never sent.
        const made: Request[] = [];
        const at: number[] = [];
        for (let i = start; i < start + count; i++) {
          try {
            made.push(reqs.at(i)!);
            at.push(i);
          } catch (e) {
            results[i] = new NetlinkError('EINVAL', `making request ${i} of a burst: ${errorText(e)}`, {
              cause: e,
            });
          }
        }
        if (made.length === 0) return done();
        const messages: EncodableMessage[] = [];
        const ops: OpText[] = [];
        for (let k = 0; k < made.length; k++) {
          const req = made[k]!;
          const index = at[k]!;
          ops.push(req.op);
          const last = k === made.length - 1;
          const seq = this.nextSeq();
          this.register(seq, {
            op: req.op,
            parts: [],
            interrupted: false,
            resolve: last ? settleRest : noop,
            reject: (e: NetlinkError): void => {
              results[index] = e;
              if (last) settleRest();
            },
          });
          seqs.push(seq);
          messages.push({
            type: req.type,
            flags: NLM_F.REQUEST | (last ? NLM_F.ACK : 0) | req.flags,
            seq,
            body: req.body,
          });
        }
        // One buffer for the datagram: a buffer per message was an allocation and a copy each.
        this.send([encodeMessages(messages)], seqs, ops);
      });
    const lane = async (): Promise<void> => {
      while (next < reqs.length) {
        const start = next;
        const count = Math.min(PER_DATAGRAM, reqs.length - start);
        next += count;
        await sendChunk(start, count);
      }
    };
    await Promise.all(Array.from({ length: LANES }, lane));
    return results;
  }

  /**
   * One nfnetlink batch (an nf_tables transaction) in one datagram: begin, the requests (each
   * ACKed), end. Resolves once every request is ACKed; rejects with the first error, and the kernel
   * then committed none of them. begin and end ask for no ACK (kernels before 6.10 never send one),
   * but an error answering either (the subsystem missing, a malformed batch) fails the whole batch:
   * the kernel stopped there.
   */
  transaction(begin: Request, reqs: readonly Request[], end: Request): Promise<void> {
    if (reqs.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let left = reqs.length;
      let failed: NetlinkError | undefined;
      const guards: number[] = [];
      const settle = (): void => {
        for (const g of guards) this.finish(g, undefined);
        if (failed === undefined) resolve();
        else reject(failed);
      };
      const seqs: number[] = [];
      const messages: EncodableMessage[] = [];
      const add = (req: Request, flags: number, p: Pending): void => {
        const seq = this.nextSeq();
        this.register(seq, p);
        seqs.push(seq);
        messages.push({ type: req.type, flags: NLM_F.REQUEST | flags | req.flags, seq, body: req.body });
      };
      const guard = (req: Request): void => {
        add(req, 0, {
          op: req.op,
          parts: [],
          interrupted: false,
          // No ACK comes for a guard; an error does, and nothing else of the batch will.
          resolve: noop,
          reject: (e: NetlinkError): void => {
            failed ??= e;
            for (const s of seqs) if (!guards.includes(s)) this.finish(s, e);
          },
        });
        guards.push(seqs[seqs.length - 1]!);
      };
      guard(begin);
      for (const req of reqs) {
        add(req, NLM_F.ACK, {
          op: req.op,
          parts: [],
          interrupted: false,
          resolve: (): void => {
            if (--left === 0) settle();
          },
          reject: (e: NetlinkError): void => {
            failed ??= e;
            if (--left === 0) settle();
          },
        });
      }
      guard(end);
      this.send(
        [encodeMessages(messages)],
        seqs,
        messages.map((_, i) => (i === 0 ? begin.op : i === messages.length - 1 ? end.op : reqs[i - 1]!.op)),
      );
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new NetlinkError('ECANCELED', 'socket closed'));
    this.raw.close();
  }

  private nextSeq(): number {
    if (this.closed) throw new NetlinkError('EBADF', 'request on a closed netlink handle');
    this.seq = (this.seq % 0xfffffffe) + 1;
    return this.seq;
  }

  private register(seq: number, p: Pending): void {
    if (this.pending.size === 0 && !this.keepRef) this.raw.ref();
    this.pending.set(seq, p);
  }

  private prepare(
    req: Request,
    flags: number,
    onPart?: (msg: RawMessage) => void,
  ): [Promise<RawMessage[]>, Buffer, number] {
    const seq = this.nextSeq();
    const promise = new Promise<RawMessage[]>((resolve, reject) => {
      this.register(seq, {
        op: req.op,
        parts: [],
        interrupted: false,
        resolve,
        reject,
        ...(onPart === undefined ? {} : { onPart }),
      });
    });
    return [promise, encodeMessage(req.type, flags, seq, req.body), seq];
  }

  private send(bufs: Buffer[], seqs: number[], ops: OpText[]): void {
    this.raw.send(bufs.length === 1 ? bufs[0]! : bufs, undefined, (err?: unknown) => {
      if (err === undefined || err === null) return;
      // sendmsg failed: none of these requests reached the kernel.
      seqs.forEach((seq, i) => {
        this.finish(seq, errorFromPackage(err, opText(ops[i] ?? 'sendmsg')));
      });
    });
  }

  /** Called after each received datagram was handled (events check their drop counter). */
  onBatchEnd: (() => void) | undefined;

  /**
   * Runs inside the package's native callback, where a thrown exception aborts the process (a C++
   * exception escapes node-addon-api). So nothing may escape: a failure is rethrown on a clean
   * stack, where it is an ordinary uncaught exception.
   */
  private receive(buf: Buffer): void {
    try {
      this.handle(buf);
      this.onBatchEnd?.();
    } catch (e) {
      setImmediate(() => {
        throw e;
      });
    }
  }

  private handle(buf: Buffer): void {
    for (const msg of decodeMessages(buf)) {
      const p = msg.seq === 0 ? undefined : this.pending.get(msg.seq);
      if (p === undefined) {
        this.onNotification?.(msg);
        continue;
      }
      if (msg.type === NLMSG_ERROR) {
        const errno = decodeErrno(msg.payload);
        this.finish(msg.seq, errno === 0 ? undefined : errorFromErrno(errno, opText(p.op)));
      } else if (msg.type === NLMSG_DONE) {
        // The kernel checks the dump's consistency on DONE too (netlink_dump_done): a change after
        // the last batch of entries marks only DONE.
        if ((msg.flags & NLM_F.DUMP_INTR) !== 0) p.interrupted = true;
        // A failed dump reports its errno in DONE's payload.
        const errno = decodeErrno(msg.payload);
        if (errno !== 0) this.finish(msg.seq, errorFromErrno(errno, opText(p.op)));
        else this.finish(msg.seq, p.interrupted ? new NetlinkError('EINTR', opText(p.op)) : undefined);
      } else {
        if ((msg.flags & NLM_F.DUMP_INTR) !== 0) p.interrupted = true;
        if (p.onPart === undefined) p.parts.push(msg);
        else p.onPart(msg);
      }
    }
  }

  private finish(seq: number, err: NetlinkError | undefined): void {
    const p = this.pending.get(seq);
    if (p === undefined) return;
    this.pending.delete(seq);
    if (this.pending.size === 0 && !this.closed && !this.keepRef) this.raw.unref();
    if (err === undefined) p.resolve(p.parts);
    else p.reject(err);
  }

  private failAll(err: NetlinkError): void {
    for (const seq of [...this.pending.keys()]) {
      // Finishing one may finish others (a transaction's guard settles its whole batch).
      const p = this.pending.get(seq);
      if (p === undefined) continue;
      this.finish(seq, new NetlinkError(err.errno, opText(p.op), { cause: err }));
    }
  }
}
