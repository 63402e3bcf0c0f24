"""Python instructions per REGISTER and per relayed call, counted by callgrind, in one process.

Run from the repository root::

    python bench/callgrind_path.py --kind register -n 10     # the workload alone (no valgrind)
    python bench/callgrind_path.py --measure                  # valgrind both kinds, N=10 and N=110

A :class:`~edgeproxy.node.Node` is built with a ``task.Clock`` and an in-memory sender (no
sockets, no reactor, no randomness that changes the path), then driven with messages parsed by
``parse_datagram`` exactly as a transport hands them over:

* ``--kind register``: N REGISTERs of N distinct AoRs, each answered 200;
* ``--kind call``: Bob registers once, then N full calls relayed by the node: Alice's INVITE → the node
  relays it to Bob's contact → Bob's 180 and 200 → Alice's ACK → Alice's BYE → Bob's 200; after each
  call the clock moves on 40 s so that every transaction of the call ends (its timers run) inside it.
* ``--kind fscall`` / ``--kind dscall``: the same calls through ``edgeproxy_routes.failover``'s
  ``to_freeswitch``, Bob playing FreeSWITCH: ``fscall`` relays to ``route_params.freeswitch[0]``
  (``$du``, no dispatcher), ``dscall`` picks Bob from a ``[dispatcher]`` set of three
  (``ds_select_dst(1, 4, "f")``, ``$T_fr_timeout``, ``t_on_failure``). Measured only when named.
* ``--kind call-nodlg``: the ``call`` workload with ``create_dialog`` made a no-op, i.e. what the calls
  cost without dialogs (the shipped routes keep each call as a dialog, issue 13). Measured only when named.
* ``--kind natcall``: the same calls to a Bob behind NAT (private Via and Contact, another source
  address): flagged by the route's ``nat_uac_test``, reached at his NAT address, his UDP flow token in
  the Record-Route popped by Alice's ACK and BYE (``--measure --kind natcall``).
* ``--kind call-acc``: the ``call`` workload on a node with ``[acc]`` writing JSON lines to a file in a
  temporary directory (an attempt and an ended-call record per call, issue 14). Measured only when named.

Method: ``valgrind --tool=callgrind`` runs the script with ``-n 10`` and with ``-n 110``; the
difference of the two totals over 100 is the cost of one operation, interpreter start-up, imports and
the node's construction cancelling out. The UAs' side (building their messages from what the node
sent) is a few string operations per message and is counted too; the node's own work — parsing each
incoming datagram, the routing script, transactions, serialising each outgoing message — dominates.
``--measure`` sets ``PYTHONHASHSEED=0`` so that two runs count the same.

``build(clock)`` is the one place that knows how a node is constructed: adapt it there when the
constructor changes (or to measure an older tree with ``PYTHONPATH=<that tree>``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
if os.environ.get("PYTHONPATH") is None:
    sys.path.insert(0, ROOT)

from twisted.internet.defer import succeed  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from edgeproxy.sip import parse_datagram  # noqa: E402
from edgeproxy.sip.endpoint import Endpoint, Flow  # noqa: E402

LOCAL = Endpoint("UDP", "127.0.0.1", 5060)
ALICE = Endpoint("UDP", "192.0.2.20", 5060)
BOB = Endpoint("UDP", "192.0.2.10", 5062)
ALICE_FLOW = Flow(LOCAL, ALICE)
BOB_FLOW = Flow(LOCAL, BOB)
# --kind natcall: Bob behind NAT writes 10.0.0.10:5062 in Via and Contact and sends from BOB_NAT, so
# the node flags him (nat_uac_test), reaches him at BOB_NAT and puts a UDP flow token in its
# Record-Route that Alice's ACK and BYE pop (nothing is sent anywhere: the sender only serialises)
BOB_PRIVATE = "10.0.0.10:5062"
BOB_NAT = Endpoint("UDP", "203.0.113.10", 40000)


def build(clock: Clock, kind: str = "register") -> tuple[Any, "Sender"]:
    """The node under measure (routes/default.py, domain example.com; for ``fscall``/``dscall`` the
    failover route, see the module docstring) and the sender it sends with."""
    from edgeproxy.location import InMemoryLocation
    try:
        from edgeproxy.node import Node
        from edgeproxy.proxy.settings import ProxySettings
    except ImportError:  # the tree before issue 9 (324e73e): both in edgeproxy/proxy/node.py
        from edgeproxy.proxy.node import Node, ProxySettings  # type: ignore[attr-defined,no-redef]
    from edgeproxy.registrar import Registrar, RegistrarSettings
    from edgeproxy.routing.loader import load_route_module

    registrar = Registrar(InMemoryLocation(clock), RegistrarSettings(), clock)
    sender = Sender()
    if kind in ("fscall", "dscall"):
        extra: dict[str, Any] = {}
        params: dict[str, Any] = {"freeswitch": [BOB.hostport]}
        if kind == "dscall":
            from edgeproxy.dispatcher import Dispatcher, DispatcherSettings

            rows = tuple({"setid": 1, "destination": f"sip:{BOB.hostport};n={n}"} for n in range(3))
            extra["dispatcher"] = Dispatcher(DispatcherSettings(destinations=rows))
            params = {}
        node = Node(clock, sender, registrar, load_route_module("edgeproxy_routes.failover"),
                    ProxySettings(domains=("example.com",)), None, params, **extra)
        node.add_local_endpoint(LOCAL)
        return node, sender
    extra = {}
    if kind == "call-acc":  # [acc] file = <temp>/calls.jsonl: the proxy core and the dialogs report to it
        from edgeproxy.acc import AccSettings, accounting_for
        from edgeproxy.dialog import DialogTable

        acc = accounting_for(AccSettings(file=os.path.join(tempfile.mkdtemp(), "calls.jsonl")), clock)
        extra = {"dialogs": DialogTable(listeners=[acc]), "calls": acc}
    node = Node(clock, sender, registrar, load_route_module("edgeproxy_routes.default"),
                ProxySettings(domains=("example.com",)), None, **extra)
    node.add_local_endpoint(LOCAL)
    return node, sender


class Sender:
    """What the transports would do with a message: serialise it; keeps the bytes per remote host."""

    def __init__(self) -> None:
        self.sent: list[tuple[Endpoint, bytes]] = []

    def send(self, destination: Any, message: Any) -> Any:
        self.sent.append((destination.remote, message.to_bytes()))
        return succeed(destination.flow if destination.flow is not None else Flow(LOCAL, destination.remote))

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        return LOCAL if transport == "UDP" else None

    def take(self) -> list[tuple[Endpoint, bytes]]:
        out, self.sent = self.sent, []
        return out


# -- the UAs ------------------------------------------------------------------------------------------

_COPIED = ("via:", "from:", "to:", "call-id:", "cseq:", "record-route:")


def _text(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def _headers(data: bytes) -> list[str]:
    return data.decode().split("\r\n\r\n", 1)[0].split("\r\n")[1:]


def _reply(request: bytes, status: int, reason: str, contact: str = "192.0.2.10:5062") -> bytes:
    """Bob's response to the request the node sent him: Via, From, To (+ tag), Call-ID, CSeq and
    Record-Route copied (RFC 3261 §8.2.6, §12.1.1), his Contact."""
    lines = [f"SIP/2.0 {status} {reason}"]
    for line in _headers(request):
        low = line.lower()
        if low.startswith(_COPIED):
            if low.startswith("to:") and ";tag=" not in low:
                line += ";tag=b1"
            lines.append(line)
    lines.append(f"Contact: <sip:bob@{contact}>")
    return _text(*lines)


def _in_dialog(method: str, ok: bytes, call_id: str, cseq: int, branch: str,
               contact: str = "192.0.2.10:5062") -> bytes:
    """Alice's request in the dialog her 200 OK set up: to Bob's Contact, Route the reversed
    Record-Route (§12.2.1.1)."""
    headers = _headers(ok)
    routes = [h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("record-route:")]
    to = next(h for h in headers if h.lower().startswith("to:"))
    return _text(
        f"{method} sip:bob@{contact} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch={branch};rport",
        "Max-Forwards: 70",
        *([f"Route: {', '.join(reversed(routes))}"] if routes else []),
        'From: "Alice" <sip:alice@example.com>;tag=a1',
        to,
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    )


def _register(user: str, host: str, port: int, n: int, expires: int = 3600) -> bytes:
    return _text(
        "REGISTER sip:example.com SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKreg{n};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@example.com>;tag=r{n}",
        f"To: <sip:{user}@example.com>",
        f"Call-ID: reg-{user}-{n}",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:{user}@{host}:{port}>;expires={expires}",
    )


def _status(data: bytes) -> int:
    return int(data[8:11]) if data.startswith(b"SIP/2.0 ") else 0


def _one(sent: list[tuple[Endpoint, bytes]], remote: Endpoint, start: bytes) -> bytes:
    hits = [data for to, data in sent if to == remote and data.startswith(start)]
    assert len(hits) == 1, (remote, start, sent)
    return hits[0]


class Driver:
    def __init__(self, kind: str = "register") -> None:
        self.clock = Clock()
        self.clock.advance(1_000)
        self.node, self.sender = build(self.clock, kind)

    def receive(self, data: bytes, flow: Flow) -> list[tuple[Endpoint, bytes]]:
        self.node.message_received(parse_datagram(data), flow)
        return self.sender.take()

    def register(self, i: int) -> None:
        port = 1024 + i % 60000
        flow = Flow(LOCAL, Endpoint("UDP", f"198.51.{(i >> 8) & 255}.{i & 255}", port))
        (reply,) = self.receive(_register(f"user{i}", flow.remote.host, port, i), flow)
        assert _status(reply[1]) == 200, reply

    def call(self, i: int, nat: bool = False) -> None:
        bob, bob_flow = (BOB_NAT, Flow(LOCAL, BOB_NAT)) if nat else (BOB, BOB_FLOW)
        contact = BOB_PRIVATE if nat else "192.0.2.10:5062"
        call_id = f"call-{i}@192.0.2.20"
        invite = _text(
            "INVITE sip:bob@example.com SIP/2.0",
            f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKinv{i};rport",
            "Max-Forwards: 70",
            'From: "Alice" <sip:alice@example.com>;tag=a1',
            "To: <sip:bob@example.com>",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            "Contact: <sip:alice@192.0.2.20:5060>",
        )
        sent = self.receive(invite, ALICE_FLOW)
        relayed = _one(sent, bob, b"INVITE ")
        assert _status(_one(sent, ALICE, b"SIP/2.0 100")) == 100
        _one(self.receive(_reply(relayed, 180, "Ringing", contact), bob_flow), ALICE, b"SIP/2.0 180")
        ok = _one(self.receive(_reply(relayed, 200, "OK", contact), bob_flow), ALICE, b"SIP/2.0 200")
        _one(self.receive(_in_dialog("ACK", ok, call_id, 1, f"z9hG4bKack{i}", contact), ALICE_FLOW), bob, b"ACK ")
        bye = _one(self.receive(_in_dialog("BYE", ok, call_id, 2, f"z9hG4bKbye{i}", contact), ALICE_FLOW), bob,
                   b"BYE ")
        _one(self.receive(_reply(bye, 200, "OK", contact), bob_flow), ALICE, b"SIP/2.0 200")
        self.clock.advance(40)  # every transaction of the call ends (Timers D, K, J, L/M)
        assert self.sender.take() == []


def run(kind: str, n: int) -> None:
    if kind == "call-nodlg":  # the route's create_dialog() does nothing: calls as before dialogs
        from edgeproxy.routing.api import RouteRequest

        RouteRequest.create_dialog = lambda self, flags="": True  # type: ignore[method-assign]
        kind = "call"
    d = Driver(kind)
    if kind in ("call", "fscall", "dscall", "call-acc"):
        (reply,) = d.receive(_register("bob", BOB.host, BOB.port, 0, expires=10**8), BOB_FLOW)
        assert _status(reply[1]) == 200, reply
        for i in range(n):
            d.call(i)
    elif kind == "natcall":
        host, port = BOB_PRIVATE.split(":")
        (reply,) = d.receive(_register("bob", host, int(port), 0, expires=10**8), Flow(LOCAL, BOB_NAT))
        assert _status(reply[1]) == 200, reply
        for i in range(n):
            d.call(i, nat=True)
    else:
        for i in range(n):
            d.register(i)


# -- the valgrind wrapper -----------------------------------------------------------------------------


def callgrind_total(kind: str, n: int, python: str = sys.executable) -> int:
    """Instructions (Ir) of one run of this script under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python,
                        os.path.abspath(__file__), "--kind", kind, "-n", str(n)],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(out) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError(f"no totals in the callgrind output of {kind} -n {n}")


def measure(kinds: list[str], small: int, large: int) -> dict[str, float]:
    per = {}
    for kind in kinds:
        a, b = callgrind_total(kind, small), callgrind_total(kind, large)
        per[kind] = (b - a) / (large - small)
        print(f"{kind:8}: {a:>14,} Ir at n={small}, {b:>14,} Ir at n={large} -> "
              f"{per[kind]:,.0f} instructions per {'REGISTER' if kind == 'register' else 'call'}", flush=True)
    return per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kind", choices=("register", "call", "fscall", "dscall", "call-nodlg", "natcall",
                                               "call-acc"),
                        default="register")
    parser.add_argument("-n", type=int, default=10, help="operations to run")
    parser.add_argument("--measure", action="store_true",
                        help="run valgrind --tool=callgrind at n=10 and n=110 for --kind (both kinds when not "
                             "given) and print the instructions per operation")
    args = parser.parse_args(argv)
    if args.measure:
        kinds = [args.kind] if "--kind" in (argv if argv is not None else sys.argv) else ["register", "call"]
        measure(kinds, 10, 110)
        return 0
    run(args.kind, args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
