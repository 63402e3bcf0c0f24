"""SIPp phones for the end-to-end tests: a UA that REGISTERs and then answers calls until stopped
(:func:`register_phone`), and the SIPp keys of a phone behind a stand-in NAT (:func:`natted`)."""

from __future__ import annotations

from typing import Any, Mapping

from .sipp_harness import Sipp, SippProcess

__all__ = ["NAT_HOST", "register_phone", "natted"]

#: The stand-in private address a natted phone writes in its Via, Contact and SDP: nothing listens there.
NAT_HOST = "127.0.0.99"


def register_phone(sipp: Sipp, address: str, user: str, ooc: str = "uas_answer", *, expires: int = 300,
                   keys: Mapping[str, Any] | None = None, duration_ms: int = 60_000,
                   timeout: float = 70) -> SippProcess:
    """A phone: REGISTER ``user`` at ``address`` (``host:port``, the ``register`` scenario), wait for
    its 200, then answer incoming requests with the ``ooc`` scenario until stopped (or ``duration_ms``).
    A phone whose REGISTER is not answered is stopped before the failure is raised."""
    phone = sipp.start("register", address, user=user, ooc=ooc, duration_ms=duration_ms, timeout=timeout,
                       keys={"expires": expires, **(keys or {})})
    try:
        phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
    except BaseException:
        phone.stop()
        raise
    return phone


def natted(transport: str | None = None, port: int = 5099) -> dict[str, Any]:
    """The SIPp keys of a phone writing the private address :data:`NAT_HOST`:``port`` in its Via and
    Contact (with ``;transport=`` in the Contact when ``transport`` is given)."""
    keys: dict[str, Any] = {"via_host": NAT_HOST, "via_port": port, "contact_host": NAT_HOST, "contact_port": port}
    if transport is not None:
        keys["contact_params"] = f";transport={transport}"
    return keys
