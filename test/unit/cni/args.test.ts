import { describe, expect, it } from 'vitest';
import { parseCniArgs } from '../../../pkg/cni/args.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';

describe('parseCniArgs', () => {
  it('parses what containerd sends', () => {
    const args = parseCniArgs(
      'IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-abcde;' +
        'K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=6f1b3c2a-1111-2222-3333-444455556666',
    );
    expect(args).toEqual({
      ignoreUnknown: true,
      podNamespace: 'kube-system',
      podName: 'coredns-5d78c9869d-abcde',
      podInfraContainerId: '0123456789abcdef',
      podUid: '6f1b3c2a-1111-2222-3333-444455556666',
      other: {},
    });
  });

  it('returns defaults for an empty string', () => {
    expect(parseCniArgs('')).toEqual({ ignoreUnknown: false, other: {} });
  });

  it('keeps unknown keys in `other` whether or not IgnoreUnknown is set', () => {
    expect(parseCniArgs('FOO=bar;ABC=123')).toEqual({
      ignoreUnknown: false,
      other: { FOO: 'bar', ABC: '123' },
    });
    expect(parseCniArgs('IgnoreUnknown=true;FOO=bar').other).toEqual({ FOO: 'bar' });
  });

  it('treats keys case-sensitively, like Go struct field names', () => {
    const args = parseCniArgs('k8s_pod_name=x');
    expect(args.podName).toBeUndefined();
    expect(args.other).toEqual({ k8s_pod_name: 'x' });
  });

  it('accepts IgnoreUnknown values 1/true/0/false in any case', () => {
    for (const [v, want] of [
      ['1', true],
      ['true', true],
      ['TRUE', true],
      ['0', false],
      ['False', false],
    ] as const) {
      expect(parseCniArgs(`IgnoreUnknown=${v}`).ignoreUnknown).toBe(want);
    }
  });

  it('allows empty values, a trailing ";" and "=" inside values; last value wins', () => {
    const args = parseCniArgs('K8S_POD_NAME=;X=a=b;K8S_POD_NAME=second;');
    expect(args.podName).toBe('second');
    expect(args.other).toEqual({ X: 'a=b' });
  });

  it('does not let "__proto__" reach the prototype', () => {
    const args = parseCniArgs('__proto__=x;constructor=y');
    expect(Object.getPrototypeOf(args.other)).toBe(Object.prototype);
    expect(Object.keys(args.other)).toEqual(['__proto__', 'constructor']);
    expect(Object.getOwnPropertyDescriptor(args.other, '__proto__')?.value).toBe('x');
  });

  const bad: [string, string][] = [
    ['FOO', `CNI_ARGS pair "FOO" has no '='`],
    ['A=1;;B', `CNI_ARGS pair "B" has no '='`],
    ['=x', `CNI_ARGS pair "=x" has an empty key`],
    ['IgnoreUnknown=yes', 'CNI_ARGS IgnoreUnknown="yes" is not one of 1, true, 0, false'],
  ];
  for (const [input, message] of bad) {
    it(`rejects ${JSON.stringify(input)} with INVALID_ENV naming CNI_ARGS`, () => {
      let caught: unknown;
      try {
        parseCniArgs(input);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(CniError);
      expect((caught as CniError).code).toBe(CniCode.INVALID_ENV);
      expect((caught as CniError).message).toBe(`invalid CNI environment: ${message}`);
    });
  }
});
