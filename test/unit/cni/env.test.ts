import { describe, expect, it } from 'vitest';
import { interfaceNameProblem, parseCniEnv } from '../../../pkg/cni/env.ts';
import { CniCode, CniError } from '../../../pkg/cni/errors.ts';

const full = {
  CNI_CONTAINERID: 'f1e2d3c4b5a6',
  CNI_NETNS: '/var/run/netns/cni-1234',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
};

function envError(env: Record<string, string | undefined>): CniError {
  try {
    parseCniEnv(env);
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error(`expected parseCniEnv to throw for ${JSON.stringify(env)}`);
}

describe('parseCniEnv: required variables per verb (1.1 spec)', () => {
  // [verb, variables that may be missing, variables that must be present]
  const table: [string, string[], string[]][] = [
    ['ADD', ['CNI_PATH'], ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']],
    ['DEL', ['CNI_NETNS', 'CNI_PATH'], ['CNI_CONTAINERID', 'CNI_IFNAME']],
    ['CHECK', ['CNI_PATH'], ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']],
    ['VERSION', ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'], []],
    ['STATUS', ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'], []],
    ['GC', ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'], ['CNI_PATH']],
  ];

  for (const [verb, optional, required] of table) {
    it(`${verb} succeeds with everything set`, () => {
      const env = parseCniEnv({ ...full, CNI_COMMAND: verb });
      expect(env.command).toBe(verb);
      expect(env.path).toEqual(['/opt/cni/bin']);
    });

    for (const name of optional) {
      it(`${verb} accepts a missing or empty ${name}`, () => {
        expect(() => parseCniEnv({ ...full, CNI_COMMAND: verb, [name]: undefined })).not.toThrow();
        expect(() => parseCniEnv({ ...full, CNI_COMMAND: verb, [name]: '' })).not.toThrow();
      });
    }

    for (const name of required) {
      it(`${verb} rejects a missing or empty ${name} with code 4`, () => {
        for (const value of [undefined, '']) {
          const err = envError({ ...full, CNI_COMMAND: verb, [name]: value });
          expect(err.code).toBe(CniCode.INVALID_ENV);
          expect(err.message).toContain(`${name} is required for ${verb}`);
        }
      });
    }

    if (required.length > 1) {
      it(`${verb} names every missing variable in one error`, () => {
        const err = envError({ CNI_COMMAND: verb });
        for (const name of required) expect(err.message).toContain(`${name} is required for ${verb}`);
      });
    }
  }

  it('returns the attachment fields for ADD', () => {
    const env = parseCniEnv({
      ...full,
      CNI_COMMAND: 'ADD',
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0',
      CNI_PATH: '/opt/cni/bin::/usr/lib/cni:',
    });
    expect(env).toEqual({
      command: 'ADD',
      containerId: 'f1e2d3c4b5a6',
      netns: '/var/run/netns/cni-1234',
      ifname: 'eth0',
      args: { ignoreUnknown: true, podNamespace: 'default', podName: 'web-0', other: {} },
      path: ['/opt/cni/bin', '/usr/lib/cni'],
    });
  });

  it("containerd's second DEL (CNI_NETNS empty) leaves netns undefined", () => {
    const env = parseCniEnv({ ...full, CNI_COMMAND: 'DEL', CNI_NETNS: '' });
    expect(env.netns).toBeUndefined();
    expect(env.containerId).toBe(full.CNI_CONTAINERID);
  });

  it('ignores attachment variables (even invalid ones) for verbs without an attachment', () => {
    for (const verb of ['VERSION', 'STATUS', 'GC']) {
      const env = parseCniEnv({
        CNI_COMMAND: verb,
        CNI_CONTAINERID: '-bad',
        CNI_IFNAME: 'a/b',
        CNI_NETNS: 'relative',
        CNI_ARGS: 'junk',
        CNI_PATH: '/opt/cni/bin',
      });
      expect(env.containerId).toBeUndefined();
      expect(env.ifname).toBeUndefined();
      expect(env.netns).toBeUndefined();
      expect(env.args).toEqual({ ignoreUnknown: false, other: {} });
    }
  });
});

describe('parseCniEnv: command', () => {
  it('requires CNI_COMMAND', () => {
    const err = envError({ ...full });
    expect(err.code).toBe(CniCode.INVALID_ENV);
    expect(err.message).toContain('CNI_COMMAND is required');
  });

  it('rejects an unknown or lower-case command with code 4, as the skel does', () => {
    for (const cmd of ['FOO', 'add', 'INIT', ' ADD']) {
      const err = envError({ ...full, CNI_COMMAND: cmd });
      expect(err.code).toBe(CniCode.INVALID_ENV);
      expect(err.message).toContain('unknown CNI_COMMAND');
      expect(err.message).toContain(JSON.stringify(cmd));
    }
  });
});

describe('parseCniEnv: value validation', () => {
  it('combines every problem into one message', () => {
    const err = envError({
      CNI_COMMAND: 'ADD',
      CNI_IFNAME: 'eth0/x',
      CNI_NETNS: 'var/run/netns/x',
      CNI_ARGS: 'K8S_POD_NAME',
    });
    expect(err.code).toBe(CniCode.INVALID_ENV);
    expect(err.message).toBe(
      'invalid CNI environment: CNI_CONTAINERID is required for ADD; CNI_NETNS "var/run/netns/x" is not an absolute path; ' +
        `CNI_IFNAME "eth0/x" contains '/'; CNI_ARGS pair "K8S_POD_NAME" has no '='`,
    );
  });

  const goodIds = ['a', '0', 'f1e2d3c4b5a6', 'A_b.c-d', '9.9.9'];
  const badIds = ['-a', '_a', '.a', 'a b', 'a/b', 'a:b', 'é', 'a\nb'];
  for (const id of goodIds) {
    it(`accepts container ID ${JSON.stringify(id)}`, () => {
      expect(parseCniEnv({ ...full, CNI_COMMAND: 'ADD', CNI_CONTAINERID: id }).containerId).toBe(id);
    });
  }
  for (const id of badIds) {
    it(`rejects container ID ${JSON.stringify(id)}`, () => {
      const err = envError({ ...full, CNI_COMMAND: 'DEL', CNI_CONTAINERID: id });
      expect(err.code).toBe(CniCode.INVALID_ENV);
      expect(err.message).toContain('CNI_CONTAINERID');
    });
  }

  it('requires an absolute CNI_NETNS when it is given, for ADD and CHECK', () => {
    for (const verb of ['ADD', 'CHECK']) {
      const err = envError({ ...full, CNI_COMMAND: verb, CNI_NETNS: 'netns/x' });
      expect(err.message).toContain('CNI_NETNS "netns/x" is not an absolute path');
    }
  });

  it('DEL goes on without a CNI_NETNS or CNI_ARGS it cannot use (it needs neither), and says so', () => {
    const env = parseCniEnv({
      ...full,
      CNI_COMMAND: 'DEL',
      CNI_NETNS: 'netns/x',
      CNI_ARGS: 'junk;K8S_POD_NAME=web-0',
    });
    expect(env.netns).toBeUndefined();
    expect(env.containerId).toBe(full.CNI_CONTAINERID);
    expect(env.args.podName).toBe('web-0');
    expect(env.ignored).toEqual([
      'CNI_NETNS "netns/x" is not an absolute path',
      expect.stringContaining('junk'),
    ]);
    // What DEL finds the attachment by still counts.
    expect(envError({ ...full, CNI_COMMAND: 'DEL', CNI_IFNAME: 'a/b' }).code).toBe(CniCode.INVALID_ENV);
    expect(parseCniEnv({ ...full, CNI_COMMAND: 'ADD' }).ignored).toBeUndefined();
  });
});

describe('CNI_IFNAME "all" and "default", the names of every interface’s sysctl directories', () => {
  const full = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/p', CNI_PATH: '/opt/cni/bin' };
  for (const name of ['all', 'default']) {
    it(`refuses ${name} for ADD and CHECK (code 4), takes it for DEL (which then finds nothing)`, () => {
      for (const command of ['ADD', 'CHECK']) {
        const err = envError({ ...full, CNI_COMMAND: command, CNI_IFNAME: name });
        expect(err.code).toBe(CniCode.INVALID_ENV);
        expect(err.message).toContain(`CNI_IFNAME "${name}" must not be "${name}"`);
      }
      expect(parseCniEnv({ ...full, CNI_COMMAND: 'DEL', CNI_IFNAME: name }).ifname).toBe(name);
    });
  }
});

describe('interfaceNameProblem mirrors Go ValidateInterfaceName', () => {
  const valid = ['eth0', 'a', 'net1', '123456789012345', 'veth-a.b_c', 'é', '@x'];
  const invalid: [string, string][] = [
    ['', 'is empty'],
    ['1234567890123456', 'is 16 bytes long; the limit is 15'],
    ['éééééééé', 'is 16 bytes long; the limit is 15'],
    ['.', 'must not be "." or ".."'],
    ['..', 'must not be "." or ".."'],
    ['a/b', "contains '/'"],
    ['a:b', "contains ':'"],
    ['a b', 'contains whitespace'],
    ['a\tb', 'contains whitespace'],
    ['a\u00a0b', 'contains whitespace'],
    ['a\u3000b', 'contains whitespace'],
    ['a\u0085', 'contains whitespace'],
    ['a\0b', 'contains a NUL byte'],
  ];
  for (const name of valid) {
    it(`accepts ${JSON.stringify(name)}`, () => expect(interfaceNameProblem(name)).toBeUndefined());
  }
  for (const [name, problem] of invalid) {
    it(`rejects ${JSON.stringify(name)}: ${problem}`, () => expect(interfaceNameProblem(name)).toBe(problem));
  }
  it('"..." is a valid name (only "." and ".." are reserved)', () => {
    expect(interfaceNameProblem('...')).toBeUndefined();
  });
});
