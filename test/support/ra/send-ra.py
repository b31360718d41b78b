# Sends one ICMPv6 router advertisement out of an interface, as a router on the link would: to
# ff02::1 from the interface's link-local address, hop limit 255, router lifetime 1800 s, and one
# on-link, autonomous /64 prefix (SLAAC). Run inside the router's test namespace:
#   ip netns exec NS python3 send-ra.py IFACE PREFIX      (PREFIX like fd00:99::)
# Exits 2 while the interface has no usable link-local address yet (the caller retries).
import socket
import struct
import sys

iface, prefix = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)  # the kernel fills the checksum
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
SO_BINDTODEVICE = 25
s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.encode() + b'\0')
# type 134, code 0, checksum, cur hop limit 64, flags 0, router lifetime, reachable time, retrans timer
ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 1800, 0, 0)
# prefix information: type 3, length 4 (x 8 bytes), /64, flags on-link|autonomous, valid, preferred lifetimes
pio = struct.pack('!BBBBIII', 3, 4, 64, 0xC0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, prefix)
try:
    s.sendto(ra + pio, ('ff02::1', 0, 0, socket.if_nametoindex(iface)))
except OSError as e:
    print(f'send-ra: {e}', file=sys.stderr)
    sys.exit(2)
