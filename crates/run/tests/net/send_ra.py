"""Send IPv6 router adverts from inside a container (run in its network
namespace by tests/net.rs): a prefix to autoconfigure and a router
lifetime, so a host that accepts them takes an address and a default
route. usage: send_ra.py IFNAME PREFIX"""
import socket, struct, sys, time

ifname, prefix = sys.argv[1], sys.argv[2]
index = socket.if_nametoindex(ifname)
# Our link-local address, once duplicate address detection is done.
deadline = time.time() + 15
src = None
while src is None and time.time() < deadline:
    for line in open('/proc/net/if_inet6'):
        addr, idx, plen, scope, flags, name = line.split()
        if name == ifname and scope == '20' and not int(flags, 16) & 0x40:
            src = ':'.join(addr[i:i + 4] for i in range(0, 32, 4))
    if src is None:
        time.sleep(0.2)
if src is None:
    sys.exit('no link-local address on ' + ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
s.bind((src, 0, 0, index))
# Type 134, code 0, checksum (kernel), hop limit 64, flags 0, router
# lifetime 1800 s, reachable 0, retransmit 0; then a prefix option:
# /64, on-link and autonomous, valid 1 day, preferred 4 hours.
ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 1800, 0, 0)
ra += struct.pack('!BBBBIII', 3, 4, 64, 0xc0, 86400, 14400, 0)
ra += socket.inet_pton(socket.AF_INET6, prefix)
for _ in range(5):
    s.sendto(ra, ('ff02::1', 0, 0, index))
    time.sleep(0.3)
print('sent')
