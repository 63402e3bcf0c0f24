"""Small recording stand-ins shared by the unit tests."""

from __future__ import annotations


class LocationRecorder:
    """A :class:`~edgeproxy.location.LocationListener` (what federation and the NAT pinger are) that
    records ``("created", aor)`` and ``("emptied", aor)`` events in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def aor_created(self, aor: str) -> None:
        self.events.append(("created", aor))

    def aor_emptied(self, aor: str) -> None:
        self.events.append(("emptied", aor))
