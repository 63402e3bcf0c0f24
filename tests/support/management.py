"""The MI tests' world (``test_management.py``, ``test_metrics.py``): the real parts on a ``task.Clock``
-- an InMemoryLocation, a Registrar that contacts are registered through (REGISTER text parsed as from
the wire), a Node running the shipped default route -- and :class:`~edgeproxy.management.MICommands`
over them."""

from __future__ import annotations

from itertools import count
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, LogLevelFilterPredicate

from edgeproxy.location import InMemoryLocation
from edgeproxy.management import MICommands, MIError
from edgeproxy.management.loglevel import LogLevelControl
from edgeproxy.node import Node
from edgeproxy.proxy.flood import FloodDetector
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.registrar import Registrar, RegistrarSettings
from edgeproxy.routing.loader import load_route_module
from edgeproxy.service import RunningNode
from edgeproxy.sip import Request, Response, parse_datagram
from edgeproxy.sip.endpoint import Endpoint, Flow

from .doubles import LocationRecorder

__all__ = ["T0", "LOCAL", "PHONE", "NullSender", "World", "options"]

T0 = 1_000.0
LOCAL = Endpoint("UDP", "127.0.0.1", 5060)
PHONE = Endpoint("UDP", "192.0.2.10", 5062)
_seq = count(1)


class NullSender:
    """The node's transports: what it sends is kept, never delivered."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, destination: Any, message: Any) -> Deferred:
        self.sent.append((destination, message))
        return succeed(Flow(LOCAL, destination.remote))


class World:
    def __init__(self, settings: RegistrarSettings | None = None, flood: FloodDetector | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.location = InMemoryLocation(self.clock)
        self.registrar = Registrar(self.location, settings or RegistrarSettings(), self.clock)
        self.sender = NullSender()
        self.node = Node(self.clock, self.sender, self.registrar, load_route_module("edgeproxy_routes.default"),
                         ProxySettings(domains=("example.com",)), flood=flood)
        self.node.add_local_endpoint(LOCAL)
        self.parts = RunningNode(self.node, None, self.location, self.registrar)  # type: ignore[arg-type]
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
        self.wall = [1_700_000_000.0]
        self.mi = MICommands(self.parts, log_control=LogLevelControl(self.node, [self.predicate]),
                             wall=lambda: self.wall[0])
        self.listener = LocationRecorder()
        self.location.subscribe(self.listener)

    def register(self, user: str, contact: str, *, expires: int = 300, source: Endpoint = PHONE,
                 extra: str = "", nat: bool = False, call_id: str | None = None) -> Response:
        text = (
            "REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source.hostport};branch=z9hG4bKreg{next(_seq)}\r\n"
            f"From: <sip:{user}@example.com>;tag=r{next(_seq)}\r\nTo: <sip:{user}@example.com>\r\n"
            f"Call-ID: {call_id or f'reg-{user}-{next(_seq)}'}\r\nCSeq: 7 REGISTER\r\n"
            f"Contact: {contact};expires={expires}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        request = parse_datagram(text.encode())
        assert isinstance(request, Request)
        out: list[Response] = []
        self.registrar.save(request, Flow(LOCAL, source), nat=nat).addCallback(out.append)
        assert out and out[0].status == 200, out
        return out[0]

    def call(self, method: str, params: Any = None) -> Any:
        """Run a command; its result, or the MIError it failed with."""
        out: list[Any] = []
        self.mi.execute(method, params).addBoth(out.append)
        assert out, f"{method} did not answer at once"
        result = out[0]
        if hasattr(result, "value") and hasattr(result, "trap"):  # a Failure
            if isinstance(result.value, MIError):
                return result.value
            result.raiseException()
        return result

    def error(self, method: str, params: Any = None) -> MIError:
        result = self.call(method, params)
        assert isinstance(result, MIError), f"{method} {params!r} answered {result!r}"
        return result


def options(n: int) -> bytes:
    """An OPTIONS to the node itself from 192.0.2.30 (the default route answers it 200)."""
    return (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKo{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:mon@example.com>;tag=o{n}\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: opt-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
