import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  findOne,
  type K8sObject,
  kubectlSkipReason,
  manifestsDir,
  render,
  repoRoot,
  validateObject,
} from './support.ts';

const IMAGE = 'ghcr.io/trellis-net/trellis';
const PORT = 9743;

describe.skipIf(kubectlSkipReason !== undefined)(
  `kustomize manifests${kubectlSkipReason ? ` (skipped: ${kubectlSkipReason})` : ''}`,
  () => {
    let base: K8sObject[];
    let ondelete: K8sObject[];
    let ds: IDaemonSet;
    beforeAll(() => {
      base = render(manifestsDir);
      ondelete = render(join(manifestsDir, 'overlays', 'ondelete'));
      ds = findOne<IDaemonSet>(base, 'DaemonSet', 'trellis');
    });

    const podSpec = () => ds.spec!.template.spec!;
    const agent = () => podSpec().containers.find((c) => c.name === 'agent')!;
    const installCni = () => podSpec().initContainers?.find((c) => c.name === 'install-cni');

    it('renders exactly the objects trellis ships', () => {
      const ids = base.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort();
      expect(ids).toEqual([
        'ClusterRole//trellis',
        'ClusterRoleBinding//trellis',
        'ConfigMap/kube-system/trellis-config',
        'DaemonSet/kube-system/trellis',
        'ServiceAccount/kube-system/trellis',
      ]);
    });

    it('every rendered object (base and overlay) passes its Kubernetes schema', () => {
      for (const obj of [...base, ...ondelete]) {
        expect(() => validateObject(obj), `${obj.kind} ${obj.metadata.name}`).not.toThrow();
      }
    });

    it('schema validation does reject a broken object, including unknown fields', () => {
      const broken = structuredClone(
        findOne<K8sObject>(base, 'DaemonSet', 'trellis'),
      ) as unknown as IDaemonSet;
      (broken.spec!.template.spec as unknown as Record<string, unknown>).hostNetwork = 'yes';
      expect(() => validateObject(broken as unknown as K8sObject)).toThrow(/hostNetwork must be boolean/);

      const noContainers = structuredClone(ds);
      delete (noContainers.spec!.template.spec as unknown as Record<string, unknown>).containers;
      expect(() => validateObject(noContainers as unknown as K8sObject)).toThrow(/containers/);

      const badPropagation = structuredClone(ds);
      const mount = badPropagation.spec!.template.spec!.containers[0]!.volumeMounts!.find(
        (m) => m.mountPropagation,
      );
      (mount as unknown as Record<string, unknown>).mountPropagation = 'HostToPod';
      expect(() => validateObject(badPropagation as unknown as K8sObject)).toThrow(/mountPropagation/);

      // Unknown fields: the compiled schemas allow them, kubectl apply does not, so validateObject must.
      const typo = structuredClone(ds);
      const probe = typo.spec!.template.spec!.containers[0]!.livenessProbe as unknown as Record<
        string,
        unknown
      >;
      probe.failureTreshold = 3;
      const annotated = structuredClone(ds);
      (annotated.metadata!.annotations as unknown) = { 'any.key/is-fine': 'x' };
      (annotated.spec!.template.spec!.nodeSelector as Record<string, string>)['any-label'] = 'y';
      expect(() => validateObject(annotated as unknown as K8sObject)).not.toThrow();
      expect(() => validateObject(typo as unknown as K8sObject)).toThrow(
        /unknown field\(s\) spec\.template\.spec\.containers\[0\]\.livenessProbe\.failureTreshold$/,
      );
      const misplaced = structuredClone(ds) as unknown as { spec: Record<string, unknown> };
      misplaced.spec.hostNetwork = true;
      expect(() => validateObject(misplaced as unknown as K8sObject)).toThrow(
        /unknown field\(s\) spec\.hostNetwork$/,
      );
    });

    it('runs on every Linux node, before the node is Ready, in the host network', () => {
      const spec = podSpec();
      expect(ds.metadata?.namespace).toBe('kube-system');
      expect(spec.hostNetwork).toBe(true);
      expect(spec.priorityClassName).toBe('system-node-critical');
      expect(spec.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
      // The CPUs the image is built for (Dockerfile: linux/amd64, linux/arm64), and only those.
      expect(spec.affinity).toEqual({
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              {
                matchExpressions: [{ key: 'kubernetes.io/arch', operator: 'In', values: ['amd64', 'arm64'] }],
              },
            ],
          },
        },
      });
      // One toleration with operator Exists and no key/effect tolerates every taint.
      expect(spec.tolerations).toEqual([{ operator: 'Exists' }]);
      expect(spec.serviceAccountName).toBe('trellis');
      expect(spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(10);
      expect(spec.terminationGracePeriodSeconds).toBeLessThanOrEqual(60);
      expect(ds.spec!.template.metadata?.labels).toMatchObject(
        ds.spec!.selector.matchLabels ?? { missing: true },
      );
    });

    it('rolls one node at a time by default', () => {
      expect(ds.spec!.updateStrategy).toEqual({
        type: 'RollingUpdate',
        rollingUpdate: { maxUnavailable: 1 },
      });
    });

    it('the ondelete overlay switches to OnDelete and changes nothing else', () => {
      const other = findOne<IDaemonSet>(ondelete, 'DaemonSet', 'trellis');
      // rollingUpdate must be gone: the API server rejects it next to type OnDelete.
      expect(other.spec!.updateStrategy).toEqual({ type: 'OnDelete' });
      const strip = (o: IDaemonSet) => ({ ...o, spec: { ...o.spec!, updateStrategy: undefined } });
      expect(strip(other)).toEqual(strip(ds));
      expect(ondelete.filter((o) => o.kind !== 'DaemonSet')).toEqual(
        base.filter((o) => o.kind !== 'DaemonSet'),
      );
    });

    it('the agent is privileged, sized from the targets, and configured by downward API and ConfigMap', () => {
      const c = agent();
      expect(c.securityContext?.privileged).toBe(true);
      expect(c.resources).toEqual({ requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '512Mi' } });
      expect(c.env).toContainEqual({
        name: 'NODE_NAME',
        valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } },
      });
      expect(c.envFrom).toEqual([{ configMapRef: { name: 'trellis-config' } }]);
      const cm = findOne<IConfigMap>(base, 'ConfigMap', 'trellis-config');
      expect(cm.data).toEqual({
        TRELLIS_MODE: 'auto',
        TRELLIS_MTU: '0',
        TRELLIS_LOG_LEVEL: 'info',
        TRELLIS_NO_MASQUERADE_CIDRS: '',
      });
    });

    it('probes hit the agent port: startup and liveness /healthz, readiness /readyz', () => {
      const c = agent();
      expect(c.ports).toEqual([{ name: 'http', containerPort: PORT, protocol: 'TCP' }]);
      expect(c.args).toContain(`--metrics-addr=:${PORT}`);
      for (const [probe, path] of [
        [c.startupProbe, '/healthz'],
        [c.livenessProbe, '/healthz'],
        [c.readinessProbe, '/readyz'],
      ] as const) {
        expect(probe?.httpGet?.path).toBe(path);
        // A named port must resolve to the declared container port.
        expect(c.ports?.find((p) => p.name === probe?.httpGet?.port)?.containerPort).toBe(PORT);
        // hostNetwork: the kubelet must probe the node IP, so no host override.
        expect(probe?.httpGet?.host).toBeUndefined();
      }
      // Liveness must not kill an agent that is still doing its first full node list.
      const startupBudget = c.startupProbe!.periodSeconds! * c.startupProbe!.failureThreshold!;
      expect(startupBudget).toBeGreaterThanOrEqual(60);
    });

    it('mounts the host paths the agent needs, same path inside and out', () => {
      const spec = podSpec();
      const hostPathOf = (volume: string) => spec.volumes?.find((v) => v.name === volume)?.hostPath;
      const mounts = new Map((agent().volumeMounts ?? []).map((m) => [m.mountPath, m]));
      for (const path of [
        '/etc/cni/net.d',
        '/opt/cni/bin',
        '/var/lib/trellis',
        '/run/trellis',
        '/var/run/netns',
      ]) {
        const m = mounts.get(path);
        expect(m, path).toBeDefined();
        expect(hostPathOf(m!.name)).toEqual({ path, type: 'DirectoryOrCreate' });
        expect(m!.readOnly ?? false, path).toBe(false);
      }
      expect(mounts.get('/var/run/netns')?.mountPropagation).toBe('HostToContainer');
      // No /lib/modules: the image has no modprobe, and the kernel loads nf_tables modules itself.
      expect(mounts.has('/lib/modules')).toBe(false);
      // Legacy iptables' lock, shared with kube-proxy: a file, created where the host has none.
      expect(hostPathOf(mounts.get('/run/xtables.lock')!.name)).toEqual({
        path: '/run/xtables.lock',
        type: 'FileOrCreate',
      });
      // No volume is declared without being mounted somewhere.
      const used = new Set(
        [...spec.containers, ...(spec.initContainers ?? [])].flatMap((c) =>
          (c.volumeMounts ?? []).map((m) => m.name),
        ),
      );
      expect((spec.volumes ?? []).map((v) => v.name).filter((n) => !used.has(n))).toEqual([]);
    });

    it('every path flag of the agent lies on a host mount', () => {
      const mountPaths = (agent().volumeMounts ?? []).map((m) => m.mountPath);
      const pathFlags = (agent().args ?? []).filter((a) =>
        /^--(state-dir|socket|cni-conf-dir|cni-bin-dir)=/.test(a),
      );
      expect(pathFlags).toHaveLength(4);
      for (const flag of pathFlags) {
        const value = flag.slice(flag.indexOf('=') + 1);
        expect(
          mountPaths.some((m) => value === m || value.startsWith(`${m}/`)),
          flag,
        ).toBe(true);
      }
    });

    it("--host-proc is the host's /proc, mounted read-only (pod namespaces named /proc/PID/ns/net)", () => {
      expect(agent().args).toContain('--host-proc=/host/proc');
      const mount = agent().volumeMounts?.find((m) => m.mountPath === '/host/proc');
      expect(mount?.readOnly).toBe(true);
      expect(podSpec().volumes?.find((v) => v.name === mount!.name)?.hostPath).toEqual({
        path: '/proc',
        type: 'Directory',
      });
    });

    it('install-cni only installs binaries: it cannot write the config list', () => {
      const init = installCni();
      expect(init, 'init container install-cni').toBeDefined();
      expect(init!.command).toEqual(['/app/dist/bin/trellis-agent', 'install-cni']);
      // --host-proc: the new shim answers VERSION in the host's mount namespace before it is installed.
      expect(init!.args).toEqual(['--cni-bin-dir=/opt/cni/bin', '--host-proc=/host/proc']);
      expect(init!.image).toBe(agent().image);
      // The config list is the agent's job once ready; the init container has no way to the conf dir.
      expect((init!.volumeMounts ?? []).map((m) => [m.mountPath, m.readOnly === true])).toEqual([
        ['/opt/cni/bin', false],
        ['/host/proc', true],
      ]);
      expect(podSpec().initContainers).toHaveLength(1);
    });

    it('the ServiceAccount is the one bound to the ClusterRole', () => {
      const crb = findOne<IClusterRoleBinding>(base, 'ClusterRoleBinding', 'trellis');
      expect(crb.roleRef).toEqual({
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'ClusterRole',
        name: 'trellis',
      });
      expect(crb.subjects).toEqual([{ kind: 'ServiceAccount', name: 'trellis', namespace: 'kube-system' }]);
    });

    it("manifests/uninstall runs `trellis-agent uninstall` on every node with the agent's paths", () => {
      const objects = render(join(manifestsDir, 'uninstall'));
      for (const obj of objects) expect(() => validateObject(obj), obj.kind).not.toThrow();
      expect(objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(['DaemonSet/trellis-uninstall']);
      const spec = findOne<IDaemonSet>(objects, 'DaemonSet', 'trellis-uninstall').spec!.template.spec!;
      expect(spec.hostNetwork).toBe(true);
      expect(spec.tolerations).toEqual([{ operator: 'Exists' }]);
      // Every node the agent ran on, and only those.
      expect(spec.nodeSelector).toEqual(ds.spec!.template.spec!.nodeSelector);
      expect(spec.affinity).toEqual(ds.spec!.template.spec!.affinity);
      expect(spec.automountServiceAccountToken).toBe(false);
      const init = spec.initContainers?.[0];
      expect(init?.command).toEqual(['/app/dist/bin/trellis-agent', 'uninstall']);
      expect(init?.securityContext?.privileged).toBe(true);
      expect(init?.image).toBe(agent().image);
      // The same flags as the agent, minus the listener and the ways into pods: it must find exactly
      // what the agent created (prepared veth pairs by their name, not through --netns-dir).
      const intoPods = ['--metrics-addr=', '--host-proc=', '--netns-dir='];
      expect(init?.args).toEqual((agent().args ?? []).filter((a) => !intoPods.some((f) => a.startsWith(f))));
      // uninstall deletes the state directory: it must not be a mount point in the container (EBUSY).
      expect(init?.volumeMounts?.map((m) => m.mountPath)).not.toContain('/var/lib/trellis');
      for (const flag of init?.args ?? []) {
        const value = flag.slice(flag.indexOf('=') + 1);
        const m = init?.volumeMounts?.find(
          (v) => value === v.mountPath || value.startsWith(`${v.mountPath}/`),
        );
        expect(m, flag).toBeDefined();
        expect(spec.volumes?.find((v) => v.name === m!.name)?.hostPath?.path).toBe(m!.mountPath);
      }
    });

    it('the image is the release of package.json, and an overlay can override it', () => {
      const version = (
        JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }
      ).version;
      expect(agent().image).toBe(`${IMAGE}:${version}`);
      expect(installCni()?.image).toBe(`${IMAGE}:${version}`);

      const dir = mkdtempSync(join(tmpdir(), 'trellis-kustomize-'));
      try {
        writeFileSync(
          join(dir, 'kustomization.yaml'),
          [
            'apiVersion: kustomize.config.k8s.io/v1beta1',
            'kind: Kustomization',
            'resources:',
            // kustomize accepts only relative paths to other kustomizations.
            `  - ${relative(dir, manifestsDir)}`,
            'images:',
            `  - name: ${IMAGE}`,
            '    newName: localhost/trellis',
            '    newTag: e2e',
            '',
          ].join('\n'),
        );
        const overridden = findOne<IDaemonSet>(render(dir), 'DaemonSet', 'trellis').spec!.template.spec!;
        const images = [...overridden.containers, ...(overridden.initContainers ?? [])].map((c) => c.image);
        expect(images).toEqual(['localhost/trellis:e2e', 'localhost/trellis:e2e']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  },
);
