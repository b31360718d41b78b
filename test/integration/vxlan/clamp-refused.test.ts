import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatusView } from '../../../pkg/ops/views.ts';
import { AGENT_BINARY } from '../../support/cni-driver.ts';
import { nsExec } from '../../support/netns.ts';
import { Testbed, testbedSkipReason } from '../../support/testbed/index.ts';
import { nftTable, within } from '../faults/support.ts';

/**
 * A kernel without nft_exthdr / nft_rt refuses the MSS clamp's rule. No such kernel runs here, so the
 * agents find a stand-in `nft` first on their PATH that refuses any ruleset with the clamp, as nft
 * does there, and passes everything else to the real one. The clamp must not take masquerade with it:
 * the agent applies the table without it, says so once, reports it in status, and pods still talk.
 */
const skip = testbedSkipReason();
const REFUSAL = 'Error: Could not process rule: No such file or directory';

const title = 'a kernel that refuses the MSS clamp keeps masquerade (real agents, stand-in nft)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let bin: string;

  beforeAll(async () => {
    bin = mkdtempSync(join(tmpdir(), 'trl-nft-'));
    const real = execFileSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).trim();
    writeFileSync(
      join(bin, 'nft'),
      `#!/bin/sh
# Refuses what a kernel without nft_exthdr / nft_rt refuses, applied or only checked (-c -f -);
# passes the rest to the real nft. exec in this process, never in a pipeline's child: the agent knows
# its own commits by nft's pid.
echo "$*" >> '${bin}/calls'
if [ "$1" = "-f" ] || [ "$1 $2" = "-c -f" ]; then
  input=$(cat)
  case "$input" in *maxseg*) echo "${REFUSAL}" >&2; exit 1 ;; esac
  exec ${real} "$@" <<RULESET
$input
RULESET
fi
exec ${real} "$@"
`,
    );
    chmodSync(join(bin, 'nft'), 0o755);
    tb = await Testbed.create({
      segments: [{ nodes: 1 }, { nodes: 1 }],
      agentEnv: { PATH: `${bin}:${process.env.PATH ?? ''}` },
      // Resyncs every 2 s: each one checks the refused clamp again (nft -c), which must stay quiet.
      agentArgs: ['--resync-seconds', '2'],
    });
  }, 120_000);

  afterAll(async () => {
    if (tb !== undefined) {
      await tb.teardown();
      expect(tb.leftovers()).toEqual([]);
    }
    rmSync(bin, { recursive: true, force: true });
  });

  it('masquerade is applied without the clamp, the agent says why once, status and pods carry on', async () => {
    const n1 = tb.node('node-1');
    const table = (): string => nftTable(tb, 'node-1');
    await within(5000, 'the masquerade table applied', () => table().includes('masquerade'));
    expect(table()).not.toContain('maxseg');
    const warned = n1.logs.filter((l) => String(l.msg).startsWith('the kernel refused the TCP MSS clamp'));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 'warn', error: expect.stringContaining(REFUSAL) });

    const status = JSON.parse(
      nsExec(n1.ns, AGENT_BINARY, ['status', '--json', '--socket', n1.agent!.socket]),
    ) as StatusView;
    expect(status).not.toHaveProperty('mssClamp');
    expect(status.mssClampRefused).toContain(REFUSAL);

    // Resyncs check the clamp again without committing (nft -c), refused each time: nothing said
    // again, the table not rewritten.
    const before = table();
    const checks = () =>
      readFileSync(join(bin, 'calls'), 'utf8')
        .split('\n')
        .filter((c) => c.startsWith('-c -f')).length;
    const checked = checks();
    await within(10_000, 'two more checks of the clamp at resyncs', () => checks() >= checked + 2);
    expect(
      n1.logs.filter((l) => String(l.msg).startsWith('the kernel refused the TCP MSS clamp')),
    ).toHaveLength(1);
    expect(table()).toBe(before);

    // The nodes are on two segments: pods talk through the tunnel, TCP by path MTU discovery now.
    await tb.addPod('node-1');
    await tb.addPod('node-2');
    expect((await tb.connectivityMatrix()).failures).toEqual([]);
  });
});
