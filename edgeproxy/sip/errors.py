"""Typed errors of the SIP core.

Every error a remote peer can provoke carries the status the wire should see, in the spirit of h11's
``RemoteProtocolError(error_status_hint=...)``: the transport turns a :class:`SipParseError` raised by a
request into that reply without knowing why it happened.
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every error the SIP core (RFC 3261 §7, §19, §20, §25) raises on purpose."""


class SipParseError(SipError):
    """A message that is not valid SIP (RFC 3261 §25), or exceeds a configured limit.

    ``status``/``reason`` are what a reply should say (400 with a reason naming the defect, 505 for an
    unsupported version, 513 for an oversized message, 416 for an unusable Request-URI scheme).
    ``is_request`` tells whether a reply is possible at all: a broken response is dropped (RFC 3261
    §18.1.2) and only logged. ``partial`` holds what could be salvaged from the head, as
    ``(canonical name, value)`` pairs, so that the reply can copy Via, From, To, Call-ID and CSeq
    (§8.2.6.2). ``fatal`` marks stream errors after which framing is lost and the connection must close.
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        *,
        is_request: bool | None = None,
        partial: list[tuple[str, str]] | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.is_request = is_request
        self.partial = partial or []
        self.fatal = fatal

    @property
    def can_reply(self) -> bool:
        """True when this error came from a request whose Via and CSeq were salvaged: the least a
        reply needs to reach the client (§18.2.2) and match its transaction (§17.1.3). A request
        without Call-ID, From or To still gets its 400 (RFC 4475 §3.3.1 ``insuf``). An ACK is never
        answered (§17.1.1.3, §17.2.1: no response to an ACK exists), so a broken one is only dropped."""
        if not self.is_request:
            return False
        keys = set()
        for k, v in self.partial:
            if k == "cseq" and v.rsplit(None, 1)[-1:] == ["ACK"]:
                return False
            keys.add(k)
        return {"via", "cseq"} <= keys


class SipValueError(SipParseError):
    """A header value (§20) or URI (§19.1, §25.1) that does not parse; raised by the typed accessors.

    It is a :class:`SipParseError` so a route or the proxy can let it propagate and have the message
    answered with 400.
    """
