"""Making call records: :class:`Accounting` hears the proxy core and the dialog table.

* From the proxy core (``invite_final``, the :class:`~edgeproxy.proxy.hooks.CallObserver` the
  :class:`~edgeproxy.proxy.engine.StatefulProxy` is given): the first final response of every INVITE
  server transaction -- answered, busy, cancelled, timed out, refused by the route -- is one
  ``attempt`` record. This is OpenSIPS's ``do_accounting("log|db", "missed|failed")`` on every
  initial INVITE, without a script call.
* From the dialog table (a :class:`~edgeproxy.dialog.DialogListener`, given to it when it is built):
  a confirmed dialog that ends (BYE either way, lifetime, MI ``dlg_end_dlg``, a WebSocket closing) is
  one ``cdr`` record with its duration -- OpenSIPS's ``cdr`` flag. So the duration of a call is known
  when the route ``create_dialog()`` s it (the shipped routes do); an answered call without a dialog
  has its attempt record only, as OpenSIPS without ``cdr`` writes only the 2xx.

No I/O here: the records go to the writers given (:mod:`.writers`). Times: ``clock`` is the node's
(transaction and dialog times are on it); ``wall`` dates the records (the same as the reactor's).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ..sip.errors import SipValueError
from ..sip.values import parse_name_address
from .records import CallRecord

if TYPE_CHECKING:  # pragma: no cover
    from ..dialog import Dialog
    from ..sip.endpoint import Endpoint, Flow
    from ..sip.message import Request, Response

__all__ = ["Accounting", "RecordWriter"]


class RecordWriter(Protocol):
    def write(self, record: CallRecord) -> None: ...

    def close(self) -> Any: ...


class Clock(Protocol):
    def seconds(self) -> float: ...


def _address(endpoint: Endpoint | None) -> str:
    """``transport:host:port`` (the Endpoint's own text), "" for none."""
    return "" if endpoint is None else str(endpoint)


def _uri(header: str) -> str:
    try:
        return str(parse_name_address(header).uri)
    except SipValueError:
        return header


class Accounting:
    """Call records for one node (see the module docstring); ``stats`` are the MI's ``acc:``."""

    def __init__(self, writers: Sequence[RecordWriter], clock: Clock, wall: Callable[[], float] = time.time) -> None:
        self.writers = tuple(writers)
        self.clock = clock
        self.wall = wall
        self.stats = {"attempts": 0, "missed": 0, "cdrs": 0}
        # (Call-ID, caller tag) -> (source, destination, From URI, To URI) of answered calls a dialog
        # tracks, until they end (a dialog keeps no address of a UDP party, and its From/To are header
        # text): at most one entry per active dialog
        self._legs: dict[tuple[str, str], tuple[str, str, str, str]] = {}

    def _write(self, record: CallRecord) -> None:
        for writer in self.writers:
            writer.write(record)

    # -- the proxy core: an INVITE's first final response --------------------------------------------
    def invite_final(self, request: Request, response: Response, source: Flow, destination: Endpoint | None,
                     setup: float, dialog: bool) -> None:
        """``response`` (as sent to the caller) ended ``request``'s setup after ``setup`` seconds;
        ``destination`` is where the branch that gave it went (None: answered by the node itself);
        ``dialog``: a dialog tracks the call, so its end will be recorded too."""
        status = response.status
        self.stats["attempts"] += 1
        if status >= 300:
            self.stats["missed"] += 1
        from_ = request.from_
        to = request.to
        tracked = dialog and status < 300
        src, dst = _address(source.remote), _address(destination)
        from_uri, to_uri = str(from_.uri), str(to.uri)
        if tracked:
            self._legs[(request.call_id, from_.tag or "")] = (src, dst, from_uri, to_uri)
        self._write(CallRecord(
            "attempt", request.method, from_uri, to_uri, from_.tag or "", response.to_tag or "",
            request.call_id, status, response.reason, self.wall() - setup, setup, 0.0, src, dst, dialog=tracked))

    # -- DialogListener: the end of an answered call -------------------------------------------------
    def dialog_created(self, dialog: Dialog) -> None:
        pass

    def dialog_confirmed(self, dialog: Dialog, response: Response) -> None:
        pass

    def dialog_failed(self, dialog: Dialog, status: int) -> None:
        self._legs.pop((dialog.call_id, dialog.caller_tag), None)  # a late failure after a 2xx: no cdr

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        duration = max(0.0, self.clock.seconds() - dialog.start)
        setup = max(0.0, dialog.start - dialog.created)
        self.stats["cdrs"] += 1
        legs = self._legs.pop((dialog.call_id, dialog.caller_tag), None)
        if legs is None:  # answered before a record was asked for: what the dialog itself says
            legs = (_address(dialog.caller_flow.remote if dialog.caller_flow is not None else None),
                    _address(dialog.callee_flow.remote if dialog.callee_flow is not None else None),
                    _uri(dialog.from_hdr), _uri(dialog.to_hdr))
        src, dst, from_uri, to_uri = legs
        self._write(CallRecord(
            "cdr", "INVITE", from_uri, to_uri, dialog.caller_tag, dialog.callee_tag or "", dialog.call_id, 200, "OK",
            self.wall() - duration, setup, duration, src, dst, end_reason=reason))

    def close(self) -> list[Any]:
        return [writer.close() for writer in self.writers]
