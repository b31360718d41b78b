import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { findOne, kubectlSkipReason, parseYamlStream, repoRoot, validateObject } from './support.ts';

/**
 * What can be checked of the kind suite without a Docker engine: the cluster configs, the shell
 * scripts' syntax, run.sh's skip path (for real: the Docker client fails to reach a socket that
 * does not exist), and the whole suite run against kind-fake.sh, which stands in for docker, kind and
 * kubectl, so the suite's own logic (what it checks, what it tolerates) runs here too.
 */

const kindDir = join(repoRoot, 'test', 'e2e', 'kind');
const runSh = join(kindDir, 'run.sh');
const fakeSh = join(repoRoot, 'test', 'unit', 'manifests', 'kind-fake.sh');

interface KindCluster {
  kind: string;
  apiVersion: string;
  networking: { ipFamily: string; disableDefaultCNI: boolean; podSubnet: string; serviceSubnet: string };
  nodes: { role: string }[];
}

const loadCluster = (family: string) =>
  parse(readFileSync(join(kindDir, `cluster-${family}.yaml`), 'utf8')) as KindCluster;
const isV6 = (cidr: string) => cidr.includes(':');

describe('kind cluster configs', () => {
  for (const [family, v4, v6] of [
    ['ipv4', 1, 0],
    ['dual', 1, 1],
    ['ipv6', 0, 1],
  ] as const) {
    it(`cluster-${family}.yaml: no default CNI, one control plane and two workers, ${family} subnets`, () => {
      const c = loadCluster(family);
      expect(c.kind).toBe('Cluster');
      expect(c.apiVersion).toBe('kind.x-k8s.io/v1alpha4');
      expect(c.networking.disableDefaultCNI).toBe(true);
      expect(c.networking.ipFamily).toBe(family);
      // run.sh addresses nodes as <cluster>-control-plane, -worker and -worker2.
      expect(c.nodes.map((n) => n.role)).toEqual(['control-plane', 'worker', 'worker']);
      for (const key of ['podSubnet', 'serviceSubnet'] as const) {
        const cidrs = c.networking[key].split(',');
        expect(
          cidrs.filter((x) => !isV6(x)),
          key,
        ).toHaveLength(v4);
        expect(cidrs.filter(isV6), key).toHaveLength(v6);
      }
    });
  }
});

describe('kind suite scripts', () => {
  const scripts = [
    runSh,
    fakeSh,
    join(repoRoot, 'scripts', 'image-stage.sh'),
    join(repoRoot, 'scripts', 'image-verify.sh'),
  ];

  it('parse (bash -n / sh -n)', () => {
    for (const s of scripts.slice(0, 2)) execFileSync('bash', ['-n', s]);
    for (const s of scripts.slice(2)) execFileSync('sh', ['-n', s]);
  });

  const shellcheck = spawnSync('shellcheck', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!shellcheck)(`pass shellcheck${shellcheck ? '' : ' (skipped: shellcheck not installed)'}`, () => {
    const r = spawnSync('shellcheck', scripts, { encoding: 'utf8' });
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });

  // A Docker client pointed at a socket nobody listens on fails `docker info` for real.
  const noEngine = { ...process.env, DOCKER_HOST: `unix:///tmp/trellis-no-docker-${process.pid}.sock` };

  it('without a Docker engine: one clear line, exit 0', () => {
    const r = spawnSync('bash', [runSh], { env: noEngine, encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^kind e2e skipped: needs a running Docker engine and kind in PATH \(.+\)$/);
    expect(lines[0]).toMatch(/docker (not in PATH|info failed: )/);
  });

  it('without a Docker engine: --preflight exits 3, --require fails', () => {
    const pre = spawnSync('bash', [runSh, '--preflight'], {
      env: noEngine,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(pre.status).toBe(3);
    expect(pre.stdout).toMatch(/^kind e2e skipped: /);
    const req = spawnSync('bash', [runSh, '--require'], { env: noEngine, encoding: 'utf8', timeout: 60_000 });
    expect(req.status).toBe(1);
    expect(req.stderr).toMatch(/^kind e2e FAILED: needs a running Docker engine/);
  });

  it.skipIf(kubectlSkipReason !== undefined)(
    `--print-manifests: what the suite applies is manifests/ with the image under test and the mode asked for${kubectlSkipReason ? ` (skipped: ${kubectlSkipReason})` : ''}`,
    () => {
      const print = (image: string, mode?: string) => {
        const env = { ...process.env };
        if (mode === undefined) delete env.TRELLIS_E2E_MODE;
        else env.TRELLIS_E2E_MODE = mode;
        return spawnSync('bash', [runSh, '--print-manifests', image], {
          env,
          encoding: 'utf8',
          timeout: 60_000,
        });
      };
      const check = (image: string, mode: string | undefined, wantMode: string) => {
        const r = print(image, mode);
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        const objects = parseYamlStream(r.stdout);
        for (const o of objects) validateObject(o);
        const spec = findOne<IDaemonSet>(objects, 'DaemonSet', 'trellis').spec!.template.spec!;
        expect([...spec.containers, ...(spec.initContainers ?? [])].map((c) => c.image)).toEqual([
          image,
          image,
        ]);
        expect(findOne<IConfigMap>(objects, 'ConfigMap', 'trellis-config').data?.TRELLIS_MODE).toBe(wantMode);
      };
      check('trellis-e2e:ab12', undefined, 'auto');
      // A registry with a port: the tag is after the last colon of the last path element.
      check('localhost:5000/trellis:dev', 'vxlan', 'vxlan');
      const untagged = print('localhost:5000/trellis');
      expect(untagged.status).toBe(2);
      expect(untagged.stderr).toContain('usage:');
    },
  );

  it('rejects unknown arguments', () => {
    const r = spawnSync('bash', [runSh, '--bogus'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('usage:');
  });
});

describe('run.sh against a fake docker, kind and kubectl (kind-fake.sh)', () => {
  let tmp: string;
  let state: string;
  let bin: string;
  beforeEach(() => {
    tmp = mkdtempSync(join(tmpdir(), 'trellis-kind-fake-'));
    state = join(tmp, 'state');
    bin = join(tmp, 'bin');
    mkdirSync(state);
    mkdirSync(bin);
    // sleep too: the suite's waits return at once.
    for (const cmd of ['docker', 'kind', 'kubectl', 'sleep']) symlinkSync(fakeSh, join(bin, cmd));
  });
  afterEach(() => {
    rmSync(tmp, { recursive: true, force: true });
  });

  /** One IPv4 cluster, with an image "already built" (no docker build); knobs: see kind-fake.sh. */
  const runSuite = (knobs: Record<string, string> = {}) => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      FAKE_STATE: state,
      TRELLIS_E2E_FAMILIES: 'ipv4',
      TRELLIS_E2E_IMAGE: 'trellis-e2e:fake',
      ...knobs,
    };
    for (const k of ['TRELLIS_E2E_MODE', 'TRELLIS_E2E_BUSYBOX', 'TRELLIS_E2E_MAX_LOST', 'KUBECONFIG'])
      delete env[k];
    // Well under the test's own timeout: a check that never passes spins in `eventually` (sleep is fake).
    const r = spawnSync('bash', [runSh, '--require'], { env, encoding: 'utf8', timeout: 30_000 });
    const calls = readFileSync(join(state, 'calls'), 'utf8').trim().split('\n');
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, calls };
  };
  const indexOfCall = (calls: string[], re: RegExp) => calls.findIndex((c) => re.test(c));

  it("builds its image without buildx's attestations (kind load cannot import them)", () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      FAKE_STATE: state,
      TRELLIS_E2E_FAMILIES: 'ipv4',
    };
    for (const k of [
      'TRELLIS_E2E_IMAGE',
      'TRELLIS_E2E_MODE',
      'TRELLIS_E2E_BUSYBOX',
      'TRELLIS_E2E_MAX_LOST',
      'KUBECONFIG',
    ])
      delete env[k];
    const r = spawnSync('bash', [runSh, '--require'], { env, encoding: 'utf8', timeout: 30_000 });
    const calls = readFileSync(join(state, 'calls'), 'utf8').trim().split('\n');
    expect(r.status, calls.join('\n')).toBe(0);
    const image = calls.find((c) => c.startsWith('docker build '))?.match(/-t (\S+)/)?.[1];
    expect(calls.filter((c) => c.startsWith('docker build '))).toEqual([
      `docker build --provenance=false --sbom=false -t ${image} ${repoRoot}`,
    ]);
    // The image built is the one loaded into the cluster.
    expect(
      calls.some(
        (c) =>
          c.startsWith(`kind load docker-image ${image}:latest `) ||
          c.startsWith(`kind load docker-image ${image} `),
      ),
    ).toBe(true);
  });

  it('runs the families it has configs for: IPv4 and dual-stack by default, IPv6-only when asked', () => {
    const clusters = (families: string | undefined) => {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        PATH: `${bin}:${process.env.PATH ?? ''}`,
        FAKE_STATE: state,
        TRELLIS_E2E_IMAGE: 'trellis-e2e:fake',
      };
      for (const k of ['TRELLIS_E2E_MODE', 'TRELLIS_E2E_BUSYBOX', 'TRELLIS_E2E_MAX_LOST', 'KUBECONFIG'])
        delete env[k];
      if (families === undefined) delete env.TRELLIS_E2E_FAMILIES;
      else env.TRELLIS_E2E_FAMILIES = families;
      rmSync(join(state, 'calls'), { force: true });
      spawnSync('bash', [runSh, '--require'], { env, encoding: 'utf8', timeout: 30_000 });
      return readFileSync(join(state, 'calls'), 'utf8')
        .trim()
        .split('\n')
        .flatMap((c) => /^kind create cluster .*--config \S*\/(cluster-[a-z0-9]+\.yaml)/.exec(c)?.[1] ?? []);
    };
    expect(clusters(undefined)).toEqual(['cluster-ipv4.yaml', 'cluster-dual.yaml']);
    expect(clusters('ipv6')).toEqual(['cluster-ipv6.yaml']);
  });

  it('a healthy cluster passes every check, and the cluster is deleted at the end', () => {
    const r = runSuite();
    expect(r.stderr).not.toMatch(/kind-fake: unexpected call/);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/kind e2e passed: ipv4\n$/);
    const created = indexOfCall(r.calls, /^kind create cluster --name trellis-ipv4-[0-9a-f]{4} /);
    expect(created).toBeGreaterThanOrEqual(0);
    const name = r.calls[created]!.split(' ')[4];
    expect(r.calls).toContain(`kind delete cluster --name ${name}`);
  });

  it("records the nodes' own loopback and portmap before installing trellis and compares them after", () => {
    const r = runSuite();
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const install = indexOfCall(r.calls, /^kubectl apply -k /);
    const sums = r.calls.flatMap((c, i) =>
      c.endsWith(' sha256sum /opt/cni/bin/loopback /opt/cni/bin/portmap') ? [i] : [],
    );
    // Every node before the install; every node after it, and again after the rolling update.
    expect(sums.filter((i) => i < install)).toHaveLength(3);
    expect(sums.filter((i) => i > install)).toHaveLength(6);
    for (const node of ['control-plane', 'worker', 'worker2']) {
      expect(
        r.calls.filter((c) =>
          new RegExp(`^docker exec trellis-ipv4-[0-9a-f]{4}-${node} sha256sum /opt/cni/bin/trellis$`).test(c),
        ).length,
      ).toBeGreaterThan(0);
    }
    expect(r.calls).toContain('docker run --rm --entrypoint sha256sum trellis-e2e:fake /app/cni-bin/trellis');
    expect(r.stdout).toContain("the nodes' own loopback and portmap unchanged");
  });

  for (const plugin of ['portmap', 'loopback']) {
    it(`fails when installing trellis replaced a node's own ${plugin}`, () => {
      const r = runSuite({ FAKE_INSTALL_REPLACES: plugin });
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(
        new RegExp(
          `FAIL: trellis-ipv4-[0-9a-f]{4}-(control-plane|worker2?): /opt/cni/bin/${plugin} changed when trellis was installed \\(sha256 [0-9a-f]{64}, now [0-9a-f]{64}\\)`,
        ),
      );
      expect(r.stdout).not.toMatch(/kind e2e passed/);
    });
  }

  it("fails when a node's /opt/cni/bin/trellis is not the image's", () => {
    const r = runSuite({ FAKE_NODE_TRELLIS: 'stale' });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(
      /FAIL: trellis-ipv4-[0-9a-f]{4}-(control-plane|worker2?): \/opt\/cni\/bin\/trellis is not the image's \/app\/cni-bin\/trellis/,
    );
  });

  it('fails clearly when the nodes have no loopback/portmap of their own to compare', () => {
    const r = runSuite({ FAKE_NODE_PLUGINS: 'none' });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(
      /FAIL: cannot checksum the node's own \/opt\/cni\/bin\/loopback and portmap on trellis-ipv4-[0-9a-f]{4} before trellis is installed/,
    );
    expect(indexOfCall(r.calls, /^kubectl apply -k /)).toBe(-1);
  });

  it('a busybox kind cannot load (kind#3795: containerd image store) is a warning; the nodes pull it', () => {
    const r = runSuite({ FAKE_BUSYBOX_LOAD_FAILS: '1' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      /warning: could not load busybox:1\.36 into trellis-ipv4-[0-9a-f]{4}.*the nodes pull it themselves/,
    );
    expect(r.stdout).toMatch(/kind e2e passed: ipv4\n$/);
  });

  it("pods ping the Docker host at the kind network's gateway of the cluster's family, and no answer fails the run", () => {
    const r = runSuite();
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const pings = r.calls.filter((c) => / exec web-[012] -- ping -c 2 -W 2 (172\.18\.0\.1|fc00:)/.test(c));
    // An IPv4 cluster: the IPv4 gateway only, from each of the three pods, found by a node's default route.
    expect(pings.map((c) => c.split(' ').at(-1))).toEqual(['172.18.0.1', '172.18.0.1', '172.18.0.1']);
    expect(r.calls.filter((c) => c.endsWith(' route show default'))).toEqual([
      expect.stringMatching(/^docker exec trellis-ipv4-[0-9a-f]{4}-worker ip -4 route show default$/),
    ]);
    expect(r.stdout).toContain(
      'pods on all three nodes reach the Docker host outside the cluster (ipv4): masqueraded',
    );
    const dropped = runSuite({ FAKE_EGRESS_UNANSWERED: '1' });
    expect(dropped.status).toBe(1);
    expect(dropped.stdout).toContain(
      "FAIL: ping web-0 -> 172.18.0.1 (kind's network gateway, the Docker host, outside the cluster): no answer; is pod traffic masqueraded?",
    );
  });

  it("reads every agent's whole log for a protobuf Node list or watch it could not read", () => {
    const r = runSuite();
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.calls.filter((c) => / logs pod\/trellis-\d -c agent --tail=-1$/.test(c))).toHaveLength(3);
    expect(
      r.calls.filter((c) => / exec pod\/trellis-\d -c agent -- trellis-agent status --json$/.test(c)),
    ).toHaveLength(3);
    expect(r.stdout).toContain('every agent read its Node list and watch in protobuf');
  });

  it('fails when an agent turned to JSON because it could not read protobuf Nodes', () => {
    const r = runSuite({ FAKE_AGENT_JSON_NODES: '1' });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain("FAIL: pod/trellis-1 could not read the API server's protobuf Nodes");
  });

  it("fails when an agent's status says its Nodes came in JSON (a server or proxy without protobuf)", () => {
    const r = runSuite({ FAKE_AGENT_ENCODING: 'json' });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain(
      'FAIL: pod/trellis-1: its status does not say the API server answered its Nodes in protobuf: "encoding": "json"',
    );
  });

  it('a ClusterIP refused until kube-proxy has the EndpointSlice is retried, then checked three times', () => {
    const r = runSuite({ FAKE_SERVICE_REFUSALS: '2' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('service reachable by every ClusterIP and by DNS name (ipv4)');
    // Two refused, one that answers, then the three checked answers.
    const requests = r.calls.filter((c) => c.includes('wget') && c.includes('http://10.96.100.1/'));
    expect(requests).toHaveLength(6);
  });

  it('the first request to each ClusterIP is retried with a bounded timeout', () => {
    const text = readFileSync(runSh, 'utf8');
    const fn = text.slice(text.indexOf('check_service() {'), text.indexOf('check_rolling_update() {'));
    const first = fn.match(
      /eventually (\d+) kubectl -n "\$ns" exec web-1 -- wget [^\n]*"http:\/\/\$\(url_host "\$ip"\)\/"/,
    );
    expect(first, fn).not.toBeNull();
    expect(Number(first![1])).toBeGreaterThan(0);
    expect(Number(first![1])).toBeLessThanOrEqual(120);
  });

  it('every pod run.sh creates from the busybox image may pull it: imagePullPolicy IfNotPresent', () => {
    const lines = readFileSync(runSh, 'utf8').split('\n');
    const uses = lines.flatMap((l, i) => (/^\s*image: \$busybox\s*$/.test(l) ? [i] : []));
    expect(uses.length).toBeGreaterThan(0);
    for (const i of uses) {
      const indent = lines[i]!.match(/^\s*/)![0];
      expect(lines[i + 1], `run.sh line ${i + 2}`).toBe(`${indent}imagePullPolicy: IfNotPresent`);
    }
    // No other image, and no other pull policy, anywhere in the pods it creates.
    expect(lines.filter((l) => /^\s*image:/.test(l))).toHaveLength(uses.length);
    expect(lines.filter((l) => /^\s*imagePullPolicy:/.test(l))).toHaveLength(uses.length);
  });
});
