import { describe, expect, it } from 'vitest';
import { AF, NHA, RTNH_F_ONLINK } from '../../../pkg/netlink/constants.ts';
import {
  deleteNexthopBody,
  dumpNexthopsBody,
  nexthopBody,
  nexthopIdAndProtocol,
  parseNexthop,
} from '../../../pkg/netlink/nexthop-messages.ts';
import { attr, decodeAttrs, u32Attr } from '../../../pkg/netlink/wire.ts';

const cat = (body: Buffer[]) => Buffer.concat(body);

describe('nexthop object requests', () => {
  it('encodes family, protocol, onlink, id, gateway and device; the answer layout parses back', () => {
    const nh = {
      id: 0x7e000001,
      family: 4 as const,
      gateway: '10.10.0.5',
      ifindex: 3,
      protocol: 126,
      onlink: true,
    };
    const body = cat(nexthopBody(nh));
    expect([body[0], body[2], body.readUInt32LE(4)]).toEqual([AF.INET, 126, RTNH_F_ONLINK]);
    const a = decodeAttrs(body, 8);
    expect(a.get(NHA.ID)?.readUInt32LE(0)).toBe(0x7e000001);
    expect(a.get(NHA.OIF)?.readUInt32LE(0)).toBe(3);
    expect(parseNexthop(body)).toEqual(nh);
    const v6 = { id: 9, family: 6 as const, gateway: 'fd00::5', ifindex: 4, protocol: 126 };
    expect(parseNexthop(cat(nexthopBody(v6)))).toEqual(v6);
  });

  it('rejects a gateway of the other family', () => {
    expect(() => nexthopBody({ id: 1, family: 4, gateway: 'fd00::1', ifindex: 1, protocol: 126 })).toThrow(
      TypeError,
    );
  });

  it('deletes and dumps with AF_UNSPEC; the id is the whole key', () => {
    const del = cat(deleteNexthopBody(42));
    expect(del[0]).toBe(AF.UNSPEC);
    expect(decodeAttrs(del, 8).get(NHA.ID)?.readUInt32LE(0)).toBe(42);
    expect(cat(dumpNexthopsBody())).toEqual(Buffer.alloc(8));
  });

  it('a group or blackhole object yields only its id and protocol (its id is taken, nothing more)', () => {
    const head = Buffer.alloc(8);
    head[2] = 4;
    const group = Buffer.concat([head, u32Attr(NHA.ID, 77), attr(NHA.GROUP, Buffer.alloc(8))]);
    expect(parseNexthop(group)).toEqual({ id: 77, protocol: 4 });
    expect(parseNexthop(Buffer.alloc(8))).toBeUndefined();
  });

  it("reads an object's id and protocol alone as parseNexthop reads them (the prune's dump)", () => {
    const head = Buffer.alloc(8);
    head[2] = 126;
    const objects = [
      cat(nexthopBody({ id: 0x7e000001, family: 4, gateway: '10.10.0.5', ifindex: 3, protocol: 126 })),
      cat(nexthopBody({ id: 9, family: 6, gateway: 'fd00::5', ifindex: 4, protocol: 3 })),
      Buffer.concat([head, attr(NHA.GROUP, Buffer.alloc(8)), u32Attr(NHA.ID, 77)]),
    ];
    for (const payload of objects) {
      const full = parseNexthop(payload)!;
      expect(nexthopIdAndProtocol(payload)).toEqual({ id: full.id, protocol: full.protocol });
    }
    expect(nexthopIdAndProtocol(objects[0]!)).toEqual({ id: 0x7e000001, protocol: 126 });
    expect(nexthopIdAndProtocol(Buffer.alloc(8))).toBeUndefined();
  });
});
