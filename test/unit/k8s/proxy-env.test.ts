import { describe, expect, it } from 'vitest';
import { proxyFromEnvironment } from '../../../pkg/k8s/proxy-env.ts';

const API = new URL('https://10.96.0.1:443');
const at = (url: string, env: Record<string, string>) => proxyFromEnvironment(new URL(url), env);

describe('proxyFromEnvironment (as client-go reads the environment)', () => {
  it('names HTTPS_PROXY, or https_proxy, for an https server; HTTP_PROXY for http', () => {
    expect(at(API.href, { HTTPS_PROXY: 'http://proxy:3128' })).toEqual({
      variable: 'HTTPS_PROXY',
      proxy: 'http://proxy:3128',
    });
    expect(at(API.href, { https_proxy: 'http://p:1' })?.variable).toBe('https_proxy');
    expect(at(API.href, { HTTP_PROXY: 'http://p:1' })).toBeUndefined();
    expect(at('http://api.example:8080', { HTTP_PROXY: 'http://p:1' })?.variable).toBe('HTTP_PROXY');
    expect(at(API.href, { HTTPS_PROXY: '' })).toBeUndefined();
    expect(at(API.href, {})).toBeUndefined();
  });

  it('leaves out what NO_PROXY names: *, an IP, a CIDR, with or without the port', () => {
    const p = { HTTPS_PROXY: 'http://p:1' };
    expect(at(API.href, { ...p, NO_PROXY: '*' })).toBeUndefined();
    expect(at(API.href, { ...p, NO_PROXY: 'example.com, 10.96.0.1' })).toBeUndefined();
    expect(at(API.href, { ...p, no_proxy: '10.96.0.0/12' })).toBeUndefined();
    expect(at(API.href, { ...p, NO_PROXY: '10.96.0.1:443' })).toBeUndefined();
    expect(at(API.href, { ...p, NO_PROXY: '10.96.0.1:6443' })).toBeDefined();
    expect(at(API.href, { ...p, NO_PROXY: '10.0.0.0/16,192.168.0.1' })).toBeDefined();
    expect(at('https://[fd00::1]:6443', { ...p, NO_PROXY: 'fd00::/64' })).toBeUndefined();
    expect(at('https://[fd00::1]:6443', { ...p, NO_PROXY: '[fd00::1]:6443' })).toBeUndefined();
    expect(at('https://[fd00::1]:6443', { ...p, NO_PROXY: 'fd00::2' })).toBeDefined();
  });

  it('matches domains as Go does: a domain and its subdomains, a leading dot or *. only subdomains', () => {
    const p = { HTTPS_PROXY: 'http://p:1' };
    const api = 'https://api.cluster.example:6443';
    expect(at(api, { ...p, NO_PROXY: 'cluster.example' })).toBeUndefined();
    expect(at(api, { ...p, NO_PROXY: 'api.cluster.example' })).toBeUndefined();
    expect(at(api, { ...p, NO_PROXY: '.cluster.example' })).toBeUndefined();
    expect(at(api, { ...p, NO_PROXY: '*.cluster.example' })).toBeUndefined();
    expect(at(api, { ...p, NO_PROXY: '.api.cluster.example' })).toBeDefined();
    expect(at(api, { ...p, NO_PROXY: 'other.example,luster.example' })).toBeDefined();
    expect(at(api, { ...p, NO_PROXY: 'API.Cluster.Example:6443' })).toBeUndefined();
    expect(at(api, { ...p, NO_PROXY: 'api.cluster.example:443' })).toBeDefined();
  });

  it('never names a proxy for localhost or a loopback address', () => {
    const p = { HTTPS_PROXY: 'http://p:1' };
    expect(at('https://localhost:6443', p)).toBeUndefined();
    expect(at('https://127.0.0.1:6443', p)).toBeUndefined();
    expect(at('https://[::1]:6443', p)).toBeUndefined();
  });
});
