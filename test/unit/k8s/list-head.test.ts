import { describe, expect, it } from 'vitest';
import { continueFromHead, LIST_HEAD_MAX_BYTES } from '../../../pkg/k8s/list-head.ts';

const page = (metadata: object, items = '[{"metadata":{"name":"n1"}}]'): string =>
  `{"kind":"NodeList","apiVersion":"v1","metadata":${JSON.stringify(metadata)},"items":${items}}`;

describe('continueFromHead', () => {
  it('reads the token from the head, before the items have arrived', () => {
    const text = page({ resourceVersion: '9', continue: 'eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6OX0' });
    const head = text.slice(0, text.indexOf('"items"') + 12);
    expect(continueFromHead(head)).toBe('eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6OX0');
  });

  it('asks for more while the head may still be on its way', () => {
    expect(continueFromHead('{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVers')).toBe('more');
    expect(continueFromHead('')).toBe('more');
  });

  it('has no token for the last page, a head without metadata, or items written first', () => {
    expect(continueFromHead(page({ resourceVersion: '9' }))).toBeUndefined();
    expect(continueFromHead(page({ resourceVersion: '9', continue: '' }))).toBeUndefined();
    expect(continueFromHead('{"kind":"NodeList","items":[]}')).toBeUndefined();
    expect(continueFromHead('{"items":[],"metadata":{"continue":"t"}}')).toBeUndefined();
  });

  it('reads a pretty-printed head, and gives up on one that is not a list head', () => {
    const pretty = JSON.stringify(
      { kind: 'NodeList', metadata: { continue: 't2' }, items: [{ metadata: { name: 'a' } }] },
      null,
      2,
    );
    expect(continueFromHead(pretty)).toBe('t2');
    // A key "items" nested in the head: the text before it is not a head that closes.
    expect(continueFromHead('{"metadata":{"continue":"t","items":1},"items":[]}')).toBeUndefined();
    expect(continueFromHead('{"metadata":{"continue":"t"},"x":{"items":[]}}')).toBeUndefined();
    expect(continueFromHead(`{"pad":"${'x'.repeat(LIST_HEAD_MAX_BYTES)}"`)).toBeUndefined();
  });
});
