import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execForm, type Instruction, parseDockerfile, type Stage, stages } from './dockerfile.ts';
import { manifestsDir, parseYamlStream, repoRoot } from './support.ts';

/**
 * The image cannot be built here (no Docker engine), so its build logic lives in two scripts the
 * Dockerfile calls, and this file checks both halves: the Dockerfile's structure, and the scripts run for
 * real against this checkout.
 */

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const stageScript = join(repoRoot, 'scripts', 'image-stage.sh');
const verifyScript = join(repoRoot, 'scripts', 'image-verify.sh');
const ENTRYPOINT = '/app/dist/bin/trellis-agent';

const runs = (s: Stage) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
const indexOfRun = (s: Stage, re: RegExp) =>
  s.instructions.findIndex((i) => i.keyword === 'RUN' && re.test(i.args));

describe('Dockerfile', () => {
  const instructions: Instruction[] = parseDockerfile(readFileSync(join(repoRoot, 'Dockerfile'), 'utf8'));
  const all = stages(instructions);
  const [build, final] = all as [Stage, Stage];

  it("has a build stage on the builder's platform and a runtime stage on the image's, both bookworm-slim with the Node the tests run", () => {
    expect(all).toHaveLength(2);
    expect(build.name).toBe('build');
    const tested = (
      JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
        devDependencies: Record<string, string>;
      }
    ).devDependencies.node;
    expect(tested).toMatch(/^\d+\.\d+\.\d+$/);
    for (const s of all) expect(s.image).toBe(`node:${tested}-bookworm-slim`);
    // Multi-platform (linux/amd64, linux/arm64): the build stage cross-compiles, so it runs natively.
    expect(build.platform).toBe('$BUILDPLATFORM');
    expect(final.platform).toBeUndefined();
    expect(build.instructions.some((i) => i.keyword === 'ARG' && i.args === 'TARGETARCH')).toBe(true);
  });

  it('the build stage installs, builds for TARGETARCH, reinstalls production deps for it and stages /app', () => {
    const ci = indexOfRun(build, /^npm ci --ignore-scripts$/);
    const compile = indexOfRun(build, /\bnpm run build -- --shim-arch="\$\{TARGETARCH:\?/);
    const prod = indexOfRun(
      build,
      /\bnpm ci --omit=dev --ignore-scripts --os=linux --cpu="\$cpu" --libc=glibc$/,
    );
    const stage = indexOfRun(build, /(^|\s)scripts\/image-stage\.sh \/src \/app \/usr\/lib\/cni$/);
    expect(
      [ci, compile, prod, stage].every((i) => i >= 0),
      runs(build).join('\n'),
    ).toBe(true);
    expect(ci < compile && compile < prod && prod < stage).toBe(true);
    // Docker's CPU names to npm's, and nothing else.
    expect(build.instructions[prod]?.args).toMatch(
      /case "\$TARGETARCH" in amd64\) cpu=x64 ;; arm64\) cpu=arm64 ;; \*\)/,
    );
    // Lockfile, .npmrc and the Bun toolchain's manifest first, so the npm ci layer is cached across
    // source edits (the toolchain is a local dev dependency npm ci installs from that directory).
    const copies = build.instructions.filter((i) => i.keyword === 'COPY').map((i) => i.args);
    expect(copies.slice(0, 2)).toEqual([
      'package.json package-lock.json .npmrc ./',
      'scripts/bun-toolchain/package.json scripts/bun-toolchain/package.json',
    ]);
  });

  it('the runtime stage installs only nftables, iptables (legacy hosts), iproute2, util-linux (nsenter) and the reference plugins, non-interactively', () => {
    const installs = runs(final).filter((r) => /apt-get install/.test(r));
    expect(installs).toHaveLength(1);
    const cmd = installs[0]!.split('&&').find((c) => c.includes('apt-get install'))!;
    const words = cmd.trim().split(/\s+/).slice(2);
    expect(words).toContain('--no-install-recommends');
    expect(words).toContain('-y');
    expect(words.filter((w) => !w.startsWith('-')).sort()).toEqual(
      ['containernetworking-plugins', 'iproute2', 'iptables', 'nftables', 'util-linux'].sort(),
    );
    expect(installs[0]).toMatch(/rm -rf \/var\/lib\/apt\/lists/);
    const noninteractive = final.instructions.some(
      (i) => (i.keyword === 'ARG' || i.keyword === 'ENV') && /DEBIAN_FRONTEND=noninteractive/.test(i.args),
    );
    expect(noninteractive).toBe(true);
  });

  it('the runtime stage has no build tools and takes no sources from the build context', () => {
    for (const r of runs(final)) {
      expect(r).not.toMatch(
        /\bnpm (ci|install|run)\b|\b(gcc|g\+\+|make|build-essential|python3?|git|curl|wget)\b/,
      );
    }
    const copies = final.instructions.filter((i) => i.keyword === 'COPY');
    expect(copies.map((c) => c.args)).toEqual(['--from=build /app /app']);
    expect(indexOfRun(final, /image-verify\.sh \/app$/)).toBeGreaterThan(
      final.instructions.indexOf(copies[0]!),
    );
  });

  it('points install-cni at the staged cni-bin/ directory', () => {
    const envs = final.instructions.filter((i) => i.keyword === 'ENV').map((i) => i.args);
    expect(envs.join(' ')).toMatch(/(^|\s)TRELLIS_CNI_SOURCE_DIR=\/app\/cni-bin(\s|$)/);
  });

  it('runs the agent launcher as its exec-form entrypoint, the same path the manifests call', () => {
    const entry = final.instructions.filter((i) => i.keyword === 'ENTRYPOINT');
    expect(entry).toHaveLength(1);
    expect(execForm(entry[0]!)).toEqual([ENTRYPOINT]);
    expect(final.instructions.some((i) => i.keyword === 'CMD')).toBe(false);
    const ds = readFileSync(join(manifestsDir, 'base', 'daemonset.yaml'), 'utf8');
    const [daemonset] = parseYamlStream(ds) as unknown as [
      { spec: { template: { spec: { initContainers: { command: string[] }[] } } } },
    ];
    expect(daemonset.spec.template.spec.initContainers[0]?.command[0]).toBe(ENTRYPOINT);
  });

  it('carries OCI labels, with the version of package.json', () => {
    const labels = final.instructions
      .filter((i) => i.keyword === 'LABEL')
      .map((i) => i.args)
      .join(' ');
    for (const key of ['title', 'description', 'source', 'licenses', 'version']) {
      expect(labels).toContain(`org.opencontainers.image.${key}=`);
    }
    const versionArg = final.instructions.find((i) => i.keyword === 'ARG' && i.args.startsWith('VERSION='));
    expect(versionArg?.args).toBe(`VERSION=${pkg.version}`);
  });

  it('.dockerignore keeps host builds out and lets in everything the build stage reads', () => {
    const patterns = readFileSync(join(repoRoot, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(patterns.some((p) => p.startsWith('!'))).toBe(false);
    const toRegex = (p: string) =>
      new RegExp(
        `^${p
          .replace(/^\/+|\/+$/g, '')
          .replace(/[.+^$()|[\]{}]/g, '\\$&')
          .replace(/\*\*\//g, '<ANY-DIRS>')
          .replace(/\*/g, '[^/]*')
          .replace(/\?/g, '[^/]')
          .replace(/<ANY-DIRS>/g, '(.*/)?')}$`,
      );
    const regexes = patterns.map(toRegex);
    const ignored = (path: string) => {
      const parts = path.split('/');
      return parts.some((_, n) => regexes.some((re) => re.test(parts.slice(0, n + 1).join('/'))));
    };
    for (const p of ['node_modules/x/index.js', 'dist/bin/trellis', '.git/HEAD', 'test/unit/a.test.ts']) {
      expect(ignored(p), p).toBe(true);
    }
    for (const p of [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'tsconfig.build.json',
      '.npmrc',
      'scripts/bun-toolchain/package.json',
      'scripts/build.ts',
      'scripts/shim-compile.ts',
      'scripts/source-id.ts',
      'scripts/image-stage.sh',
      'scripts/image-verify.sh',
      'cmd/agent/main.ts',
      'cmd/cni/main.ts',
      'pkg/version.ts',
    ]) {
      expect(existsSync(join(repoRoot, p)), p).toBe(true);
      expect(ignored(p), p).toBe(false);
    }
  });
});

// The staged layout needs a built checkout: `npm run build` (part of `npm test`) makes dist/.
const distSkipReason = (() => {
  for (const f of [
    'dist/bin/trellis',
    'dist/bin/trellis-agent',
    'dist/cmd/agent/main.js',
    'dist/version.json',
  ]) {
    if (!existsSync(join(repoRoot, f))) return `dist/ is not built (${f} missing): run npm run build`;
  }
  try {
    execFileSync('npm', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'needs npm in PATH (image-stage.sh lists production packages with npm ls)';
  }
  return undefined;
})();

// Debian's reference plugins, as in the image (apt-get install containernetworking-plugins).
const PLUGINS = '/usr/lib/cni';
const pluginsSkipReason = existsSync(join(PLUGINS, 'loopback'))
  ? undefined
  : `needs Debian's reference plugins in ${PLUGINS} (apt-get install containernetworking-plugins)`;

// The scripts run `node`: make it this Node 24, as in the image.
const env: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`,
};
delete env.TRELLIS_CNI_SOURCE_DIR;

function sh(script: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  return spawnSync(script, args, { env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 120_000 });
}

describe.skipIf(distSkipReason !== undefined)(
  `image layout from scripts/image-stage.sh${distSkipReason ? ` (skipped: ${distSkipReason})` : ''}`,
  () => {
    let tmp: string;
    let app: string;
    beforeAll(() => {
      tmp = mkdtempSync(join(tmpdir(), 'trellis-image-'));
      app = join(tmp, 'app');
      const r = sh(stageScript, [repoRoot, app, PLUGINS]);
      if (r.status !== 0) throw new Error(`image-stage.sh failed (${r.status}): ${r.stderr}`);
    }, 120_000);
    afterAll(() => {
      if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
    });
    // What the Dockerfile's ENV sets, relative to where the layout is.
    const imageEnv = () => ({ TRELLIS_CNI_SOURCE_DIR: join(app, 'cni-bin') });

    it('holds package.json, dist/, cni-bin/ and the production dependencies only', () => {
      expect(readdirSync(app).sort()).toEqual(['cni-bin', 'dist', 'node_modules', 'package.json']);
      for (const dep of Object.keys(pkg.dependencies)) {
        expect(existsSync(join(app, 'node_modules', dep, 'package.json')), dep).toBe(true);
      }
      // Dev-only packages (some dev dependencies, like @types/node, are also in the production tree).
      for (const dev of ['typescript', 'vitest', 'trellis-bun-toolchain', 'node', '@biomejs/biome']) {
        expect(Object.keys(pkg.devDependencies), dev).toContain(dev);
        expect(existsSync(join(app, 'node_modules', dev)), dev).toBe(false);
      }
      // The toolchain's Bun (~100 MB) is dev-only too, whichever CPU's npm installed.
      expect(existsSync(join(repoRoot, 'node_modules', '@oven'))).toBe(true);
      expect(existsSync(join(app, 'node_modules', '@oven'))).toBe(false);
      expect(existsSync(join(app, 'node_modules', '.bin', 'node'))).toBe(false);
    });

    it('cni-bin/ links what install-cni copies: the staged trellis binary and the reference plugins', () => {
      expect(readdirSync(join(app, 'cni-bin')).sort()).toEqual(['loopback', 'portmap', 'trellis']);
      // Relative, so the link stays valid wherever the layout lands (/app in the image).
      expect(readlinkSync(join(app, 'cni-bin', 'trellis'))).toBe('../dist/bin/trellis');
      expect(realpathSync(join(app, 'cni-bin', 'trellis'))).toBe(
        realpathSync(join(app, 'dist', 'bin', 'trellis')),
      );
      expect(readlinkSync(join(app, 'cni-bin', 'loopback'))).toBe(`${PLUGINS}/loopback`);
      expect(readlinkSync(join(app, 'cni-bin', 'portmap'))).toBe(`${PLUGINS}/portmap`);
    });

    it('runs: dist/bin/trellis-agent --version', () => {
      const out = execFileSync(join(app, 'dist', 'bin', 'trellis-agent'), ['--version'], {
        env,
        encoding: 'utf8',
      });
      expect(out.trim()).toBe(`trellis-agent ${pkg.version}`);
    });

    it.skipIf(pluginsSkipReason !== undefined)(
      `passes scripts/image-verify.sh, as the image build does${pluginsSkipReason ? ` (skipped: ${pluginsSkipReason})` : ''}`,
      () => {
        const r = sh(verifyScript, [app], imageEnv());
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        expect(r.stdout).toContain(`image-verify: ok: trellis ${pkg.version}`);
      },
    );

    it("image-verify.sh insists on the image's TRELLIS_CNI_SOURCE_DIR", () => {
      const r = sh(verifyScript, [app]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(`TRELLIS_CNI_SOURCE_DIR is '', want ${app}/cni-bin`);
    });

    it('image-verify.sh rejects a layout whose reference plugin is missing', () => {
      const link = join(app, 'cni-bin', 'portmap');
      const target = readlinkSync(link);
      unlinkSync(link);
      symlinkSync(join(tmp, 'no-such-dir', 'portmap'), link);
      try {
        const r = sh(verifyScript, [app], imageEnv());
        expect(r.status).not.toBe(0);
        expect(r.stderr).toContain(`${link} is missing or not executable`);
      } finally {
        unlinkSync(link);
        symlinkSync(target, link);
      }
    });

    it('image-verify.sh rejects a CNI binary built for another CPU', () => {
      // The staged binary's ELF header with its machine set to the other CPU (x86-64 62, aarch64 183).
      const link = join(app, 'cni-bin', 'trellis');
      const target = readlinkSync(link);
      const header = readFileSync(join(app, 'dist', 'bin', 'trellis')).subarray(0, 64);
      const other = header.readUInt16LE(18) === 62 ? 183 : 62;
      header.writeUInt16LE(other, 18);
      const foreign = join(tmp, 'foreign-trellis');
      writeFileSync(foreign, header, { mode: 0o755 });
      unlinkSync(link);
      symlinkSync(foreign, link);
      try {
        const r = sh(verifyScript, [app], imageEnv());
        expect(r.status).not.toBe(0);
        expect(r.stderr).toContain(`${link} is built for ELF machine ${other}`);
      } finally {
        unlinkSync(link);
        symlinkSync(target, link);
      }
    });

    it('image-verify.sh rejects a layout missing a production dependency', () => {
      const dep = join(app, 'node_modules', 'pino');
      renameSync(dep, `${dep}.hidden`);
      try {
        const r = sh(verifyScript, [app], imageEnv());
        // Either the agent's own start or the dependency load check trips first: both name the package.
        expect(r.status).not.toBe(0);
        expect(r.stderr).toMatch(/image-verify: FAIL/);
        expect(r.stderr).toMatch(/Cannot find package 'pino'/);
      } finally {
        renameSync(`${dep}.hidden`, dep);
      }
    });

    it('image-stage.sh refuses an unbuilt checkout and a non-empty destination', () => {
      const bare = mkdtempSync(join(tmp, 'bare-'));
      writeFileSync(join(bare, 'package.json'), '{"name":"trellis","version":"0.0.0"}\n');
      const unbuilt = sh(stageScript, [bare, join(tmp, 'out1')]);
      expect(unbuilt.status).not.toBe(0);
      expect(unbuilt.stderr).toContain('run `npm ci && npm run build`');
      expect(existsSync(join(tmp, 'out1'))).toBe(false);

      const again = sh(stageScript, [repoRoot, app]);
      expect(again.status).not.toBe(0);
      expect(again.stderr).toContain('is not empty');
    });
  },
);
