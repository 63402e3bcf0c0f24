"""The testing kit verified against the real thing: one list of route scenarios, two drivers.

:class:`~edgeproxy.routing.testing.RouteHarness` promises route authors that what a route does under
it is what it does on a node. This suite holds it to that, txacme's "verified fakes" pattern: each
:class:`Scenario` (a shipped route module, the node's settings, who registers, one request and who
sends it) states one expected :class:`Reply` or :class:`Relay`, and runs through both drivers:

* ``harness``: ``RouteHarness(...).run(route.request_route, text, source=...)``; the outcome is the
  last reply, or the first target (its Request-URI, its next hop: the binding's destination, ``$du``
  or the Request-URI) and whether the route record-routed;
* ``node``: ``build_node(load_config(toml), reactor)`` listening on real loopback UDP in the test's
  reactor. The parties are UDP sockets the test owns on their own loopback addresses (a caller on
  127.0.0.1, alice's phone on 127.0.0.31, FreeSWITCH on 127.0.0.2x:5060, the port a ``$du`` without
  one names); registrations are real REGISTERs from alice's socket. The outcome is the first thing
  heard: the sender's final response (100 Trying ignored) or the request arriving at a party, read
  from the wire (Request-URI, the party's address, our Record-Route).

Both drivers read the same TOML file (the harness takes its domains, registrar, route_params and
[auth] from the loaded :class:`~edgeproxy.config.Config`), so the settings cannot drift apart. Every
case asserts its own driver against the scenario's expectation: a divergence between kit and node
fails exactly one driver's parametrization. Nothing is ever sent off loopback; every wait is bounded.
The expectation is what the node does; where the harness says otherwise the scenario names the
divergence (``diverges``) and that case is a strict xfail, so fixing the kit turns it into a failure
that asks for the mark to go. Two are known: a stray ACK the route record-routes is reported as
record-routed though the node forwards it without Record-Route, and a CANCEL, which the node answers
itself (481 without a transaction) and the harness hands to the route.

Templates (requests, expectations, configuration) name the run's addresses as ``{node}``,
``{caller}``, ``{alice}``, ``{fs}`` (``host:port``) and ``{node_host}``, ``{fs_host}``, ...; the
ports are new for every case (``tests/support/ports.py``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Union

import pytest
import pytest_twisted
from support.ports import free_port
from support.transport import within
from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, maybeDeferred
from twisted.internet.protocol import DatagramProtocol

from edgeproxy.config import Config, load_config
from edgeproxy.location.destination import uri_endpoint
from edgeproxy.routing.loader import load_route_module
from edgeproxy.routing.testing import RouteHarness
from edgeproxy.service import build_node
from edgeproxy.sip import Request, Response, parse_datagram
from edgeproxy.sip.endpoint import Endpoint

WAIT = 2.0  # seconds any one thing may take on the node driver
DOMAIN = "example.com"
NODE_HOST = "127.0.0.10"
CALLER_HOST = "127.0.0.1"
ALICE_HOST = "127.0.0.31"
FS_HOSTS = [f"127.0.0.{n}" for n in range(21, 31)]  # FreeSWITCH: the first with UDP 5060 free
SIP_PORT = 5060


# -- outcomes -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """The request was answered: the final status and reason the sender gets."""

    code: int
    reason: str

    def format(self, names: dict[str, str]) -> "Reply":
        return self


@dataclass(frozen=True)
class Relay:
    """The request was relayed: the Request-URI it leaves with, the ``host:port`` it is sent to, and
    whether it carries our Record-Route."""

    ruri: str
    hop: str
    record_routed: bool

    def format(self, names: dict[str, str]) -> "Relay":
        return Relay(self.ruri.format(**names), self.hop.format(**names), self.record_routed)


Outcome = Union[Reply, Relay]


# -- the run's addresses ------------------------------------------------------------------------------

def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class World:
    """Where the node and each party are for one case."""

    node: Endpoint
    parties: dict[str, Endpoint]

    @classmethod
    def pick(cls) -> "World":
        fs_host = next((h for h in FS_HOSTS if _udp_free(h, SIP_PORT)), None)
        if fs_host is None:
            pytest.skip(f"UDP {SIP_PORT} is taken on every one of {FS_HOSTS[0]}..{FS_HOSTS[-1]}")
        return cls(Endpoint("UDP", NODE_HOST, free_port(NODE_HOST)), {
            "caller": Endpoint("UDP", CALLER_HOST, free_port(CALLER_HOST)),
            "alice": Endpoint("UDP", ALICE_HOST, free_port(ALICE_HOST)),
            "fs": Endpoint("UDP", fs_host, SIP_PORT),
        })

    def names(self, **extra: str) -> dict[str, str]:
        names = {"domain": DOMAIN, "node": self.node.hostport, "node_host": self.node.host, **extra}
        for name, ep in self.parties.items():
            names[name], names[f"{name}_host"] = ep.hostport, ep.host
        return names


# -- scenarios ----------------------------------------------------------------------------------------

def request(method: str, ruri: str, *, frm: str = "sip:carol@elsewhere.test", to: str | None = None,
            extra: str = "") -> str:
    """SIP text of one request from ``{sender}``; ``{call}`` (the case's id) keeps branches apart."""
    return (f"{method} {ruri} SIP/2.0\n"
            "Via: SIP/2.0/UDP {sender};branch=z9hG4bK-{call};rport\n"
            "Max-Forwards: 70\n"
            f"From: <{frm}>;tag=c1\n"
            f"To: <{to or ruri}>\n"
            "Call-ID: {call}@conformance\n"
            f"CSeq: 1 {method}\n"
            "Contact: <sip:caller@{sender}>\n"
            f"{extra}"
            "Content-Length: 0\n\n")


REGISTER_ALICE = request("REGISTER", "sip:{domain}", frm="sip:alice@{domain}", to="sip:alice@{domain}") \
    .replace("Contact: <sip:caller@{sender}>", "Contact: <sip:alice@{alice}>\nExpires: 300")
INVITE_ALICE = request("INVITE", "sip:alice@{domain}")
INVITE_BOB = request("INVITE", "sip:bob@{domain}")
NO_HOPS = INVITE_ALICE.replace("Max-Forwards: 70", "Max-Forwards: 0")
IN_DIALOG_BYE = request("BYE", "sip:alice@{alice}", to="sip:alice@{domain}").replace(">\nCall-ID", ">;tag=a1\nCall-ID")
PRELOADED = request("INVITE", "sip:alice@{domain}", extra="Route: <sip:127.0.0.99;lr>\n")
PING = request("OPTIONS", "sip:{node}", frm="sip:fs@{fs_host}")
INVITE_FROM_ALICE = request("INVITE", "sip:bob@{domain}", frm="sip:alice@{domain}")
ROUTED_BYE = IN_DIALOG_BYE.replace("Content-Length", "Route: <sip:{node};lr>\nContent-Length")
FOREIGN_REGISTER = REGISTER_ALICE.replace("REGISTER sip:{domain}", "REGISTER sip:other.test")
BAD_CREDENTIALS = INVITE_FROM_ALICE.replace("Content-Length", "Proxy-Authorization: Digest garbage\nContent-Length")

AUTH = '[auth]\nsecret = "conformance"\n[auth.users]\n"alice@{domain}" = "secret"\n'
SEED = ('[registrar]\nuse_domain = true\n'
        '[route_params]\nfreeswitch = ["{fs_host}"]\ndomain = "{domain}"\nprivate_ip = "{node_host}"\n')

# the same with the media servers as a dispatcher set (routes/_common.py: ds_select_dst, ds_is_in_list)
SEED_DS = ('[registrar]\nuse_domain = true\n'
           '[route_params]\ndomain = "{domain}"\nprivate_ip = "{node_host}"\n'
           '[dispatcher]\n[[dispatcher.destinations]]\nsetid = 1\ndestination = "sip:{fs}"\n')
SEED_DS_DOWN = SEED_DS + "state = 1\n"  # the only server is switched off (Inactive)

# the media servers as an address group of [permissions] (check_source_address): FreeSWITCH's own
# address and port over UDP in group 3; the same row with another port does not make it FreeSWITCH
SEED_PERM = ('[registrar]\nuse_domain = true\n'
             '[route_params]\ndomain = "{domain}"\nprivate_ip = "{node_host}"\nfreeswitch_group = 3\n'
             '[permissions]\n[[permissions.address]]\ngrp = 3\nip = "{fs_host}"\nport = 5060\nproto = "udp"\n'
             'context_info = "fs"\n')
SEED_PERM_OTHER_PORT = SEED_PERM.replace("port = 5060", "port = 5999")

ALICE_RELAYED = Relay("sip:alice@{alice}", "{alice}", True)
ALICE_REACHED = Relay("sip:alice@{alice}", "{alice}", False)  # relayed without our Record-Route
TO_FREESWITCH = Relay("sip:bob@{domain}", "{fs}", True)


@dataclass(frozen=True)
class Scenario:
    """One request to one route on a node with some settings, and what must come of it."""

    id: str
    route: str  # the route module, as [node] route names it
    request: str  # SIP text (template)
    expect: Outcome
    sender: str = "caller"  # the party that sends the request
    registered: bool = False  # alice registers sip:alice@{alice} first
    config: str = ""  # the node's settings besides [node] (TOML template)
    diverges: dict[str, str] = field(default_factory=dict)  # driver -> why it differs (strict xfail)


DEFAULT = "edgeproxy_routes.default"
SCENARIOS = [
    # routes/default.py: OpenSIPS's stock script
    Scenario("default-register", DEFAULT, REGISTER_ALICE, Reply(200, "OK"), sender="alice"),
    Scenario("default-invite-registered", DEFAULT, INVITE_ALICE, ALICE_RELAYED, registered=True),
    Scenario("default-invite-unknown", DEFAULT, INVITE_BOB, Reply(404, "Not Found"), registered=True),
    Scenario("default-invite-foreign-domain", DEFAULT, request("INVITE", "sip:bob@other.test"),
             Reply(403, "Relaying Forbidden")),
    Scenario("default-options-to-node", DEFAULT, PING, Reply(200, "OK")),
    Scenario("default-max-forwards-0", DEFAULT, NO_HOPS, Reply(483, "Too Many Hops"), registered=True),
    Scenario("default-in-dialog-no-route", DEFAULT, IN_DIALOG_BYE, Reply(404, "Not here")),
    Scenario("default-preloaded-route", DEFAULT, PRELOADED, Reply(403, "Preload Route denied")),
    Scenario("default-preloaded-route-to-node", DEFAULT, PRELOADED.replace("127.0.0.99", "{node}"), ALICE_RELAYED,
             registered=True),  # our own Route is popped (§16.4) and the call goes on
    Scenario("default-in-dialog-routed", DEFAULT, ROUTED_BYE, ALICE_REACHED),
    Scenario("default-register-foreign-domain", DEFAULT, FOREIGN_REGISTER, Reply(403, "Forbidden"), sender="alice"),
    # found by this suite: the harness reported record_route() on an ACK, which never carries one
    Scenario("default-stray-ack", DEFAULT, request("ACK", "sip:alice@{domain}"), ALICE_REACHED, registered=True),
    # found by this suite: the harness ran the route on a CANCEL, which the node answers itself (§16.10)
    Scenario("default-cancel-no-transaction", DEFAULT, request("CANCEL", "sip:alice@{domain}"),
             Reply(481, "Call/Transaction Does Not Exist"), registered=True),
    Scenario("default-auth-register-no-credentials", DEFAULT, REGISTER_ALICE, Reply(401, "Unauthorized"),
             sender="alice", config=AUTH),
    Scenario("default-auth-invite-from-local-user", DEFAULT, INVITE_FROM_ALICE,
             Reply(407, "Proxy Authentication Required"), config=AUTH),
    Scenario("default-auth-invite-from-elsewhere", DEFAULT, INVITE_BOB, Reply(404, "Not Found"), config=AUTH),
    Scenario("default-auth-malformed-credentials", DEFAULT, BAD_CREDENTIALS,
             Reply(400, "Malformed authorization parameter"), config=AUTH),
]
for _name in ("failover", "federated", "redirect"):
    _route = f"edgeproxy_routes.{_name}"
    SCENARIOS += [
        # the prelude all three share (routes/_common.py)
        Scenario(f"{_name}-register", _route, REGISTER_ALICE, Reply(200, "OK"), sender="alice", config=SEED),
        Scenario(f"{_name}-register-foreign-domain", _route, FOREIGN_REGISTER, Reply(403, "Forbidden"),
                 sender="alice", config=SEED),
        Scenario(f"{_name}-options-ping", _route, PING, Reply(200, "OK"), sender="fs", config=SEED),
        Scenario(f"{_name}-max-forwards-0", _route, NO_HOPS, Reply(483, "Too Many Hops"), sender="fs", config=SEED),
        Scenario(f"{_name}-preloaded-route", _route, PRELOADED, Reply(403, "Preload Route denied"), sender="fs",
                 config=SEED),
        # a phone's call goes to the first FreeSWITCH ($du), record-routed
        Scenario(f"{_name}-call-from-phone", _route, INVITE_BOB, TO_FREESWITCH, config=SEED),
        Scenario(f"{_name}-auth-call-from-local-user", _route, INVITE_FROM_ALICE,
                 Reply(407, "Proxy Authentication Required"), config=SEED + AUTH),
    ]
for _name in ("failover", "federated"):  # FreeSWITCH's calls: a local lookup (no cluster, no store here)
    _route = f"edgeproxy_routes.{_name}"
    SCENARIOS += [
        Scenario(f"{_name}-from-fs-local-user", _route, INVITE_ALICE, ALICE_RELAYED, sender="fs",
                 registered=True, config=SEED),
        Scenario(f"{_name}-from-fs-unknown-user", _route, INVITE_BOB, Reply(404, "Not Found"), sender="fs",
                 registered=True, config=SEED),
        # FreeSWITCH recognised by ds_is_in_list($si, 0, 1); switched off, it is still a server of the set
        Scenario(f"{_name}-ds-from-fs-local-user", _route, INVITE_ALICE, ALICE_RELAYED, sender="fs",
                 registered=True, config=SEED_DS),
        Scenario(f"{_name}-ds-from-inactive-fs-local-user", _route, INVITE_ALICE, ALICE_RELAYED, sender="fs",
                 registered=True, config=SEED_DS_DOWN),
    ]
for _name in ("failover", "federated"):  # FreeSWITCH recognised by check_source_address(freeswitch_group)
    _route = f"edgeproxy_routes.{_name}"
    SCENARIOS += [
        Scenario(f"{_name}-perm-from-fs-local-user", _route, INVITE_ALICE, ALICE_RELAYED, sender="fs",
                 registered=True, config=SEED_PERM),
        # not FreeSWITCH (its port is not the row's): a call like a phone's, and no media server is configured
        Scenario(f"{_name}-perm-from-fs-other-port", _route, INVITE_ALICE, Reply(404, "Not Found"), sender="fs",
                 registered=True, config=SEED_PERM_OTHER_PORT),
    ]
SCENARIOS += [
    # redirect asks the store first: without one, "this node could not ask", not "not found"
    Scenario("redirect-from-fs-no-store", "edgeproxy_routes.redirect", INVITE_ALICE, Reply(503, "Location Store Unavailable"),
             sender="fs", registered=True, config=SEED),
    Scenario("redirect-perm-from-fs-no-store", "edgeproxy_routes.redirect", INVITE_ALICE,
             Reply(503, "Location Store Unavailable"), sender="fs", registered=True, config=SEED_PERM),
]


def config_file(scenario: Scenario, world: World, directory: Path) -> Config:
    """The node's configuration for ``scenario``: the file both drivers read."""
    text = (f'[node]\nlisten = ["udp:{world.node.hostport}"]\nroute = "{scenario.route}"\n'
            f'domains = ["{DOMAIN}"]\n' + scenario.config.format(**world.names()))
    path = directory / "node.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path))


def wire_text(world: World, template: str, sender: str, call: str) -> str:
    return template.format(**world.names(sender=world.parties[sender].hostport, call=call))


# -- driver A: the harness ------------------------------------------------------------------------------

async def run_harness(scenario: Scenario, world: World, tmp_path: Path) -> Outcome:
    config = config_file(scenario, world, tmp_path)
    h = RouteHarness(domains=list(config.node.domains), local=world.node, settings=config.registrar,
                     params=dict(config.route_params), auth=config.auth, dispatcher=config.dispatcher,
                     permissions=config.permissions, timers=config.timers)
    if scenario.registered:
        alice = world.parties["alice"]
        reply = h.register(f"sip:alice@{DOMAIN}", f"sip:alice@{alice.hostport}", source=alice)
        assert reply.status == 200, reply
    route = load_route_module(config.node.route).request_route
    sender = world.parties[scenario.sender]
    result = h.run(route, wire_text(world, scenario.request, scenario.sender, scenario.id), source=sender)
    assert result.error is None, result.error
    if result.relayed:
        assert not result.replies, result.replies
        target = result.targets[0]
        if target.destination is not None:
            hop = target.destination.remote
        else:
            hop = uri_endpoint(target.dst_uri if target.dst_uri is not None else target.uri)  # type: ignore[arg-type]
        return Relay(str(target.uri), hop.hostport, result.record_routed)
    assert result.replies, "the route neither replied nor relayed"
    code, reason, _ = result.replies[-1]
    return Reply(code, reason or "")


# -- driver B: a node on loopback UDP ---------------------------------------------------------------------

class Party(DatagramProtocol):
    """One remote party's UDP socket; what it hears goes to the shared queue as (name, bytes)."""

    noisy = False

    def __init__(self, name: str, heard: DeferredQueue) -> None:
        self.name = name
        self.heard = heard

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.heard.put((self.name, data))


class Parties:
    """The parties' sockets, bound where the world puts them."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.heard: DeferredQueue = DeferredQueue()
        self.ports = {name: reactor.listenUDP(ep.port, Party(name, self.heard), interface=ep.host)
                      for name, ep in world.parties.items()}

    def send(self, name: str, text: str) -> None:
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        self.ports[name].write(data, (self.world.node.host, self.world.node.port))

    async def next(self) -> tuple[str, Request | Response]:
        name, data = await within(self.heard.get(), WAIT)
        message = parse_datagram(data)
        assert message is not None, data
        return name, message

    async def final_response(self, name: str) -> Response:
        while True:
            who, message = await self.next()
            if who == name and isinstance(message, Response) and message.status >= 200:
                return message
            assert isinstance(message, Response) and message.status < 200, (who, message)

    async def outcome(self, sender: str) -> Outcome:
        """The first thing heard besides a 100: the sender's final response, or a relayed request."""
        while True:
            who, message = await self.next()
            if isinstance(message, Request):
                routes = message.headers.values("record-route")
                return Relay(message.uri_text, self.world.parties[who].hostport,
                             any(self.world.node.hostport in rr for rr in routes))
            if who == sender and message.status >= 200:
                return Reply(message.status, message.reason or "")
            assert message.status < 200, (who, message.status, message.reason)

    async def close(self) -> None:
        for port in self.ports.values():
            await maybeDeferred(port.stopListening)


async def run_node(scenario: Scenario, world: World, tmp_path: Path) -> Outcome:
    config = config_file(scenario, world, tmp_path)
    running = build_node(config, reactor)
    parties = Parties(world)
    try:
        await within(running.start(list(config.node.listen)), WAIT)
        if scenario.registered:
            parties.send("alice", wire_text(world, REGISTER_ALICE, "alice", f"reg-{scenario.id}"))
            reply = await parties.final_response("alice")
            assert reply.status == 200, (reply.status, reply.reason)
        parties.send(scenario.sender, wire_text(world, scenario.request, scenario.sender, scenario.id))
        return await parties.outcome(scenario.sender)
    finally:
        await within(running.stop(), WAIT)
        await parties.close()


DRIVERS: dict[str, Callable[[Scenario, World, Path], Awaitable[Outcome]]] = {
    "harness": run_harness,
    "node": run_node,
}


def cases() -> list[Any]:
    """Every scenario under every driver; a known divergence is a strict xfail of that driver only."""
    out = []
    for scenario in SCENARIOS:
        for driver in DRIVERS:
            reason = scenario.diverges.get(driver)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(scenario, driver, id=f"{scenario.id}-{driver}", marks=marks))
    return out


@pytest.mark.parametrize(("scenario", "driver"), cases())
@pytest_twisted.ensureDeferred
async def test_route_conformance(scenario: Scenario, driver: str, tmp_path: Path) -> None:
    world = World.pick()
    outcome = await DRIVERS[driver](scenario, world, tmp_path)
    assert outcome == scenario.expect.format(world.names())


def test_every_shipped_route_is_covered_by_both_drivers() -> None:
    routes = {s.route for s in SCENARIOS}
    assert routes == {"edgeproxy_routes.default", "edgeproxy_routes.failover", "edgeproxy_routes.federated", "edgeproxy_routes.redirect"}
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)
