"""Measure the memory cost of registered contacts: ``python bench/location_memory.py [N]``.

Registers N (default 100,000) AoRs through the real :class:`~edgeproxy.registrar.Registrar` path —
REGISTER text parsed by :func:`~edgeproxy.sip.parse_datagram`, one binding each — half of them like
JsSIP over WSS (``.invalid`` contact, ``+sip.ice``, ``+sip.instance``, ``reg-id``, a connection flow per
client) and half like a UDP desk phone behind NAT (Allow header, User-Agent). Then it reports the
Python heap growth per contact measured with :mod:`tracemalloc` after the requests were dropped, i.e.
what the location service keeps. The target of the issue is at most 2 KB per contact.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet.task import Clock  # noqa: E402

from edgeproxy.location import InMemoryLocation  # noqa: E402
from edgeproxy.registrar import Registrar, RegistrarSettings  # noqa: E402
from edgeproxy.sip import parse_datagram  # noqa: E402
from edgeproxy.sip.endpoint import Endpoint, Flow  # noqa: E402

_WS = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/WSS {rnd}.invalid;branch=z9hG4bK{n}\r\n"
    "Max-Forwards: 69\r\n"
    "To: <sip:user{n}@example.com>\r\n"
    "From: <sip:user{n}@example.com>;tag=t{n}\r\n"
    "Call-ID: {rnd}{n}callidcallidcall\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:{rnd}@{rnd}.invalid;transport=ws>;+sip.ice;reg-id=1;"
    "+sip.instance=\"<urn:uuid:8f1c3d2a-0000-4000-8000-{n:012d}>\";expires=600\r\n"
    "Expires: 600\r\n"
    "Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n"
    "Supported: path,gruu,outbound\r\n"
    "User-Agent: JsSIP 3.10.1\r\n"
    "Content-Length: 0\r\n\r\n"
)
_UDP = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.{a}.{b}.{c}:5060;branch=z9hG4bK{n};rport\r\n"
    "Max-Forwards: 70\r\n"
    "To: \"User {n}\" <sip:user{n}@example.com>\r\n"
    "From: \"User {n}\" <sip:user{n}@example.com>;tag=t{n}\r\n"
    "Call-ID: {n}-4d2a9c1e@10.{a}.{b}.{c}\r\n"
    "CSeq: 21 REGISTER\r\n"
    "Contact: <sip:user{n}@10.{a}.{b}.{c}:5060;line=ab{n}>;expires=3600\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, SUBSCRIBE\r\n"
    "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    "Content-Length: 0\r\n\r\n"
)


def measure(n: int) -> float:
    """Register ``n`` contacts and return the heap bytes per contact the location service retains."""
    clock = Clock()
    clock.advance(1_700_000_000)
    location = InMemoryLocation(clock)
    registrar = Registrar(location, RegistrarSettings(use_domain=True), clock)
    local_wss = Endpoint("WSS", "192.0.2.1", 443)
    local_udp = Endpoint("UDP", "192.0.2.1", 5060)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
        if i % 2:
            rnd = f"r{i:08x}"
            text = _WS.format(rnd=rnd, n=i)
            flow = Flow(local_wss, Endpoint("WSS", f"203.0.{b}.{c}", 40000 + i % 20000), i)
        else:
            text = _UDP.format(n=i, a=a, b=b, c=c)
            flow = Flow(local_udp, Endpoint("UDP", f"198.51.{b}.{c}", 1024 + i % 60000))
        request = parse_datagram(text.encode())
        response = registrar.save(request, flow, nat=not i % 2).result  # fired synchronously
        assert response.status == 200, response
        del request, response
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert location.binding_count == n
    location.stop()
    return (after - before) / n


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 100_000
    per = measure(n)
    print(f"{n} contacts: {per:.0f} bytes per contact ({per * n / 2**20:.1f} MiB); target <= 2048")
    return 0 if per <= 2048 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
