/**
 * A client certificate and key that came from files (a kubeconfig's client-certificate and
 * client-key), read again every reloadMs, as client-go does: the kubelet's client certificate, and
 * others managed the same way, are rotated in place, and a pair read once would be presented after
 * it expired, every request refused until a restart.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';

export interface CertPair {
  readonly cert: Buffer;
  readonly key: Buffer;
}

export class ClientCertFiles {
  readonly #files: { readonly cert: string; readonly key: string; readonly reloadMs: number };
  readonly #now: () => number;
  #pair: CertPair;
  #readAt: number;

  constructor(
    files: { readonly cert: string; readonly key: string; readonly reloadMs: number },
    initial: CertPair,
    now: () => number,
  ) {
    this.#files = files;
    this.#pair = initial;
    this.#now = now;
    this.#readAt = now();
  }

  /** The files, for messages. */
  get paths(): string {
    const { cert, key } = this.#files;
    return cert === key ? cert : `${cert} and ${key}`;
  }

  /**
   * The pair to present now; a new one when the files changed to a pair that goes together. One the
   * files hold only half of (a rotation between its two writes) or cannot be read is not taken: the
   * last good pair serves, and the next call looks again.
   */
  current(): { pair: CertPair; changed: boolean } {
    const now = this.#now();
    if (now - this.#readAt < this.#files.reloadMs) return { pair: this.#pair, changed: false };
    let next: CertPair;
    try {
      next = { cert: readFileSync(this.#files.cert), key: readFileSync(this.#files.key) };
      if (next.cert.equals(this.#pair.cert) && next.key.equals(this.#pair.key)) {
        this.#readAt = now;
        return { pair: this.#pair, changed: false };
      }
      createSecureContext(next); // throws on a key that is not the certificate's, or no PEM
    } catch {
      return { pair: this.#pair, changed: false };
    }
    this.#pair = next;
    this.#readAt = now;
    return { pair: next, changed: true };
  }

  /** After a 401: the next call reads the files, not up to reloadMs later. */
  expire(): void {
    this.#readAt = Number.NEGATIVE_INFINITY;
  }
}
