import { describe, expect, it } from 'vitest';
import {
  AGENT_ANNOTATION,
  decodeReport,
  encodeReport,
  MAX_MISSING,
  NodeReporter,
} from '../../../pkg/ops/node-report.ts';

describe('agent report encoding', () => {
  it('round-trips and caps the missing list', () => {
    const missing = Array.from({ length: 30 }, (_, i) => `n${i}/v4`);
    const text = encodeReport({
      version: '1',
      ready: true,
      heartbeat: '2026-01-01T00:00:00Z',
      peersMissing: 30,
      missing,
    });
    const d = decodeReport(text);
    expect(d.ok && d.report.missing.length).toBe(MAX_MISSING);
    expect(d.ok && d.report.peersMissing).toBe(30);
  });

  it('rejects what is not a report, without throwing', () => {
    expect(decodeReport('nope')).toMatchObject({ ok: false });
    expect(decodeReport('[]')).toMatchObject({ ok: false });
    expect(
      decodeReport('{"version":"1","ready":"yes","heartbeat":"x","peersMissing":0,"missing":[]}'),
    ).toMatchObject({ ok: false });
  });
});

describe('NodeReporter', () => {
  it('writes when a pass starts or stops failing, not when only the error text changes', async () => {
    const writes: string[] = [];
    const r = new NodeReporter({
      nodeName: 'n1',
      version: '1',
      now: () => Date.parse('2026-11-29T06:00:00Z'),
      annotate: async (_name, ann) => {
        writes.push(ann[AGENT_ANNOTATION]!);
      },
    });
    await r.update({ ready: true, missing: [] });
    await r.update({ ready: true, missing: [], lastPass: { outcome: 'failed', why: 'EBUSY after 210 ms' } });
    await r.update({ ready: true, missing: [], lastPass: { outcome: 'failed', why: 'EBUSY after 390 ms' } });
    await r.update({ ready: true, missing: [] });
    expect(writes.map((w) => decodeReport(w)).map((d) => d.ok && d.report.lastPass)).toEqual([
      undefined,
      'failed: EBUSY after 210 ms',
      undefined,
    ]);
  });

  it('writes again at once to a Node re-created under the same name (a new uid), not to the same one', async () => {
    let writes = 0;
    const r = new NodeReporter({
      nodeName: 'n1',
      version: '1',
      now: () => Date.parse('2026-11-29T06:00:00Z'),
      annotate: async () => {
        writes++;
      },
    });
    await r.update({ ready: true, missing: [], nodeUid: 'u1' });
    await r.update({ ready: true, missing: [], nodeUid: 'u1' });
    expect(writes).toBe(1);
    await r.update({ ready: true, missing: [], nodeUid: 'u2' });
    expect(writes).toBe(2);
  });

  it('writes on change and on heartbeat only; retries after a failure', async () => {
    let now = Date.parse('2026-11-29T06:00:00Z');
    const writes: { name: string; value: string | null | undefined }[] = [];
    let fail = false;
    const errors: string[] = [];
    const r = new NodeReporter({
      nodeName: 'n1',
      version: '0.1.0',
      now: () => now,
      heartbeatMs: 600_000,
      annotate: async (name, ann) => {
        if (fail) throw new Error('503');
        writes.push({ name, value: ann[AGENT_ANNOTATION] });
      },
      onError: (e) => errors.push(e.message),
    });
    await r.update({ ready: false, reason: 'waiting', missing: [] });
    await r.update({ ready: false, reason: 'waiting', missing: [] });
    expect(writes).toHaveLength(1);
    now += 1000;
    await r.update({ ready: true, missing: ['n2/v4'] });
    expect(writes).toHaveLength(2);
    const last = decodeReport(writes[1]!.value!);
    expect(last).toEqual({
      ok: true,
      report: {
        version: '0.1.0',
        ready: true,
        heartbeat: '2026-11-29T06:00:01Z',
        peersMissing: 1,
        missing: ['n2/v4'],
      },
    });
    now += 599_000;
    await r.update({ ready: true, missing: ['n2/v4'] });
    expect(writes).toHaveLength(2);
    now += 2000;
    fail = true;
    await r.update({ ready: true, missing: ['n2/v4'] });
    expect(errors).toEqual(['503']);
    fail = false;
    await r.flush();
    expect(writes).toHaveLength(3);
    expect(writes.every((w) => w.name === 'n1')).toBe(true);
  });

  it('concurrent updates: the latest state is what ends up written', async () => {
    const writes: string[] = [];
    let release: () => void = () => {};
    const r = new NodeReporter({
      nodeName: 'n1',
      version: '1',
      annotate: async (_n, ann) => {
        await new Promise<void>((res) => {
          release = res;
        });
        writes.push(ann[AGENT_ANNOTATION]!);
      },
    });
    const p1 = r.update({ ready: false, missing: [] });
    const p2 = r.update({ ready: true, missing: ['a'] });
    const p3 = r.update({ ready: true, missing: ['b'] });
    release();
    await new Promise((res) => setTimeout(res, 0));
    release();
    await Promise.all([p1, p2, p3]);
    expect(writes).toHaveLength(2);
    expect(decodeReport(writes[1]!)).toMatchObject({ ok: true, report: { missing: ['b'] } });
  });
});
