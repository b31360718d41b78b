/**
 * CNI_ARGS: "K=V;K=V" pairs from the runtime. Kubernetes runtimes (containerd, CRI-O) send the pod's
 * identity here: IgnoreUnknown=1;K8S_POD_NAMESPACE=...;K8S_POD_NAME=...;K8S_POD_INFRA_CONTAINER_ID=...;
 * K8S_POD_UID=...
 */
import { CniCode, CniError } from './errors.ts';
import { quote } from './text.ts';

export interface CniArgs {
  podNamespace?: string;
  podName?: string;
  podInfraContainerId?: string;
  podUid?: string;
  /** IgnoreUnknown: "1"/"true" or "0"/"false" (any case), as Go's UnmarshallableBool. */
  ignoreUnknown: boolean;
  /** Every other key, last value wins. */
  other: Record<string, string>;
}

// A Map, not an object literal: KNOWN['constructor'] or KNOWN['__proto__'] must not find anything.
const KNOWN: ReadonlyMap<string, 'podNamespace' | 'podName' | 'podInfraContainerId' | 'podUid'> = new Map([
  ['K8S_POD_NAMESPACE', 'podNamespace'],
  ['K8S_POD_NAME', 'podName'],
  ['K8S_POD_INFRA_CONTAINER_ID', 'podInfraContainerId'],
  ['K8S_POD_UID', 'podUid'],
]);

/** Returns the problems with a CNI_ARGS value, each a phrase naming CNI_ARGS; empty when valid. */
export function cniArgsProblems(s: string): string[] {
  return parse(s).problems;
}

/** What parses of CNI_ARGS, and what does not: for DEL, which reads nothing of it that matters. */
export function parseCniArgsLeniently(s: string): { args: CniArgs; problems: string[] } {
  return parse(s);
}

/**
 * Parses CNI_ARGS. Keys are case-sensitive (Go's LoadArgs matches struct field names). Empty segments
 * (a trailing ';') are skipped. The value is everything after the first '=' (Go rejects a second '=';
 * accepting it costs nothing and values such as base64 may carry one).
 *
 * Unknown keys are kept in `other` and never rejected, whatever IgnoreUnknown says: the runtime sends
 * the same CNI_ARGS to every plugin of a chain, so keys meant for another plugin are normal, and failing
 * a pod's networking over an argument we do not use helps nobody.
 *
 * Throws CniError(INVALID_ENV) naming CNI_ARGS for a pair without '=', an empty key, or a bad
 * IgnoreUnknown value.
 */
export function parseCniArgs(s: string): CniArgs {
  const { args, problems } = parse(s);
  if (problems.length > 0) {
    throw new CniError(CniCode.INVALID_ENV, `invalid CNI environment: ${problems.join('; ')}`);
  }
  return args;
}

function parse(s: string): { args: CniArgs; problems: string[] } {
  const args: CniArgs = { ignoreUnknown: false, other: {} };
  const problems: string[] = [];
  if (s === '') return { args, problems };
  for (const pair of s.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq < 0) {
      problems.push(`CNI_ARGS pair ${quote(pair)} has no '='`);
      continue;
    }
    if (eq === 0) {
      problems.push(`CNI_ARGS pair ${quote(pair)} has an empty key`);
      continue;
    }
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    if (key === 'IgnoreUnknown') {
      const lower = value.toLowerCase();
      if (lower === '1' || lower === 'true') args.ignoreUnknown = true;
      else if (lower === '0' || lower === 'false') args.ignoreUnknown = false;
      else problems.push(`CNI_ARGS IgnoreUnknown=${quote(value)} is not one of 1, true, 0, false`);
      continue;
    }
    const field = KNOWN.get(key);
    if (field !== undefined) {
      args[field] = value;
    } else {
      // A key such as "__proto__" must not reach the prototype: define it as an own property.
      Object.defineProperty(args.other, key, { value, enumerable: true, writable: true, configurable: true });
    }
  }
  return { args, problems };
}
