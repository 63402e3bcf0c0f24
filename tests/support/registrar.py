"""The registrar tests' world (``test_registrar*.py``): a real :class:`~edgeproxy.registrar.Registrar`
over an :class:`~edgeproxy.location.InMemoryLocation` on a ``task.Clock``, the flows REGISTERs come in
on, and what a 200 OK lists."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from edgeproxy.location import Binding, InMemoryLocation
from edgeproxy.registrar import Registrar, RegistrarSettings
from edgeproxy.sip import Request, Response, parse_name_address
from edgeproxy.sip.endpoint import Endpoint, Flow

from .doubles import LocationRecorder

__all__ = ["T0", "UDP", "WSS", "RegistrarTestCase"]

T0 = 1_700_000_000.0
UDP = Flow(Endpoint("UDP", "192.0.2.1", 5060), Endpoint("UDP", "198.51.100.7", 5062))
WSS = Flow(Endpoint("WSS", "192.0.2.1", 443), Endpoint("WSS", "203.0.113.50", 51234), 17)


class RegistrarTestCase(SynchronousTestCase):
    """A registrar with ``settings`` over a fresh location table at ``T0``; its changes in ``events``."""

    settings = RegistrarSettings()

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.location = InMemoryLocation(self.clock)
        self.events = LocationRecorder()
        self.location.subscribe(self.events)
        self.registrar = Registrar(self.location, self.settings, self.clock)

    def save(self, request: Request, flow: Flow = UDP, **kw) -> Response:
        response = self.successResultOf(self.registrar.save(request, flow, **kw))
        self.assertIsInstance(response, Response)
        return response

    def bindings(self, aor: str = "alice") -> list[Binding]:
        return self.successResultOf(self.location.contacts(aor))

    def contacts(self, response: Response) -> dict[str, dict]:
        """Contact URI text → params of a 200 OK."""
        out = {}
        for value in response.headers.values("contact"):
            na = parse_name_address(value, "Contact")
            out[str(na.uri)] = na.params
        return out

    def expires_of(self, response: Response) -> dict[str, int]:
        return {uri: int(p["expires"]) for uri, p in self.contacts(response).items()}


