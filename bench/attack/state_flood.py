"""State flood, in-process: how much memory N unauthenticated INVITEs of ~60 KB leave behind while
their transactions wait (issue 16, finding 1: 10,000 of them held ~570 MB for Timer H).

A real :class:`~edgeproxy.node.Node` on a ``task.Clock`` with a sender that only counts, the
shipped ``routes.default`` (``sl_send_reply(404)`` for an unknown user) or a route answering with
``send_reply(486)`` (stateful); every INVITE is new (own Call-ID and branch) from one spoofed UDP
source that never ACKs. Prints the heap held right after the burst (tracemalloc), the transactions
alive, the replies sent and the replies sent by the end of Timer H. Nothing touches the network.

    python bench/attack/state_flood.py [--count 10000] [--size 60000] [--route default|send_reply]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
import types
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # PYTHONPATH (another checkout) first

from twisted.internet.defer import succeed  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from edgeproxy.location import InMemoryLocation  # noqa: E402
from edgeproxy.node import Node  # noqa: E402
from edgeproxy.proxy.settings import ProxySettings  # noqa: E402
from edgeproxy.registrar import Registrar, RegistrarSettings  # noqa: E402
from edgeproxy.routing.loader import RouteModule, load_route_module  # noqa: E402
from edgeproxy.sip import parse_datagram  # noqa: E402
from edgeproxy.sip.endpoint import Endpoint, Flow  # noqa: E402

LOCAL = Endpoint("UDP", "127.0.0.1", 5060)
SOURCE = Flow(LOCAL, Endpoint("UDP", "127.0.0.66", 5060))


class CountingSender:
    def __init__(self) -> None:
        self.messages = 0
        self.octets = 0

    def send(self, destination, message):  # noqa: ANN001, ANN201 - the Sender protocol
        self.messages += 1
        self.octets += len(message.to_bytes())
        return succeed(Flow(LOCAL, destination.remote))

    def local_endpoint(self, transport, remote=None):  # noqa: ANN001, ANN201
        return LOCAL if transport == "UDP" else None


def send_reply_route() -> RouteModule:
    def request_route(msg):  # noqa: ANN001, ANN202
        msg.send_reply(486, "Busy Here")
    mod = types.ModuleType("flood_routes")
    mod.request_route = request_route  # type: ignore[attr-defined]
    return RouteModule("flood_routes", mod, request_route)


def invite(i: int, size: int) -> bytes:
    pad = max(0, size - 400)
    body = f"v=0\r\na=x-pad:{'y' * pad}\r\n"
    return (f"INVITE sip:nobody{i}@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bK-f{i};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:m@example.net>;tag={i}\r\nTo: <sip:nobody{i}@example.com>\r\n"
            f"Call-ID: flood-{i}\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=60_000)
    ap.add_argument("--route", choices=("default", "send_reply"), default="default")
    args = ap.parse_args()
    clock = Clock()
    clock.advance(1000)
    location = InMemoryLocation(clock)
    sender = CountingSender()
    routes = load_route_module("routes.default") if args.route == "default" else send_reply_route()
    node = Node(clock, sender, Registrar(location, RegistrarSettings(), clock), routes,
                ProxySettings(domains=("example.com",)))
    node.add_local_endpoint(LOCAL)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    octets_in = 0
    for i in range(args.count):
        data = invite(i, args.size)
        octets_in += len(data)
        message = parse_datagram(data)
        assert message is not None
        node.message_received(message, SOURCE)
        del message, data
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    alive = len(node.table)
    replies_at_once = sender.messages
    for _ in range(int(40 / 0.25)):  # past Timer H (64*T1 = 32 s) in reactor-sized steps
        clock.advance(0.25)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - base
    print(f"state_flood route={args.route} invites={args.count} size={args.size} in={octets_in} octets")
    print(f"  held after the burst: {held / 1e6:.1f} MB ({held // max(args.count, 1)} B per INVITE),"
          f" transactions alive: {alive}")
    print(f"  replies at once: {replies_at_once}; after Timer H: {sender.messages} datagrams,"
          f" {sender.octets} octets out ({sender.octets / max(octets_in, 1):.3f} of in)")
    print(f"  held after Timer H: {after / 1e6:.1f} MB, transactions alive: {len(node.table)}")


if __name__ == "__main__":
    main()
