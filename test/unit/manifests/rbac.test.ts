import type { IClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { beforeAll, describe, expect, it } from 'vitest';
import { type ApiUsage, K8S_API_USAGE } from '../../../pkg/k8s/usage.ts';
import { findOne, kubectlSkipReason, manifestsDir, render } from './support.ts';

/**
 * The ClusterRole grants exactly what the agent's Kubernetes adapter uses: pkg/k8s exports the list
 * (K8S_API_USAGE) next to the code that makes the calls, and this test keeps the manifest equal to it,
 * so a new API call without RBAC (a 403 in production) or a stale grant fails here.
 */

type Rule = NonNullable<IClusterRole['rules']>[number];

/** Every (group, resource, verb) a set of rules grants, as sorted "group/resource:verb" strings. */
function grants(rules: readonly Rule[]): string[] {
  const out = new Set<string>();
  for (const r of rules) {
    for (const g of r.apiGroups ?? []) {
      for (const res of r.resources ?? []) for (const v of r.verbs) out.add(`${g}/${res}:${v}`);
    }
  }
  return [...out].sort();
}

function usageGrants(usage: readonly ApiUsage[]): string[] {
  return [...new Set(usage.flatMap((u) => u.verbs.map((v) => `${u.apiGroup}/${u.resource}:${v}`)))].sort();
}

describe.skipIf(kubectlSkipReason !== undefined)(
  `ClusterRole trellis vs pkg/k8s K8S_API_USAGE${kubectlSkipReason ? ` (skipped: ${kubectlSkipReason})` : ''}`,
  () => {
    let role: IClusterRole;
    beforeAll(() => {
      role = findOne<IClusterRole>(render(manifestsDir), 'ClusterRole', 'trellis');
    });

    it('uses no wildcards, resource names, non-resource URLs or aggregation', () => {
      expect(role.aggregationRule).toBeUndefined();
      for (const r of role.rules ?? []) {
        expect(r.resourceNames).toBeUndefined();
        expect(r.nonResourceURLs).toBeUndefined();
        expect([...(r.apiGroups ?? []), ...(r.resources ?? []), ...r.verbs]).not.toContain('*');
      }
    });

    it('grants exactly the API calls pkg/k8s makes, no more, no less', () => {
      expect(K8S_API_USAGE.length).toBeGreaterThan(0);
      expect(grants(role.rules ?? [])).toEqual(usageGrants(K8S_API_USAGE));
    });

    it('the comparison notices an extra or a missing grant', () => {
      const rules = role.rules ?? [];
      const extra: Rule[] = [...rules, { apiGroups: [''], resources: ['nodes'], verbs: ['delete'] }];
      expect(grants(extra)).not.toEqual(grants(rules));
      expect(grants(extra)).toContain('/nodes:delete');
      expect(grants(rules.slice(1))).not.toEqual(grants(rules));
    });

    it('stays within what a node agent may hold: no writes beyond patching nodes', () => {
      // A guard independent of K8S_API_USAGE: widening past this needs a security review, not a test edit.
      const allowed = new Set([
        '/nodes:get',
        '/nodes:list',
        '/nodes:watch',
        '/nodes:patch',
        '/nodes/status:patch',
        '/pods:get',
        '/pods:list',
        '/pods:watch',
      ]);
      expect(grants(role.rules ?? []).filter((g) => !allowed.has(g))).toEqual([]);
    });
  },
);
