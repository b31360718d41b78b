/**
 * The pod's default gateways are link-local addresses that every host veth holds itself, so the host
 * end answers ARP/NDP and ping for them (the first thing an operator tries) without proxy ARP and
 * without depending on the host having a default route. Same idea as Calico's 169.254.1.1.
 */
export const GATEWAY_V4 = '169.254.1.1';
export const GATEWAY_V6 = 'fe80::1';

export function gatewayFor(family: 4 | 6): string {
  return family === 4 ? GATEWAY_V4 : GATEWAY_V6;
}

/** The prefix length the host end holds its gateway address with (add.ts configureHostSide). */
export function gatewayPrefixLen(family: 4 | 6): number {
  return family === 4 ? 32 : 64;
}

export function hostPrefixLen(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

export function defaultDst(family: 4 | 6): string {
  return family === 4 ? '0.0.0.0/0' : '::/0';
}
