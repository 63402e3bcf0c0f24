"""Legitimate users while the node is under attack (issue 16's acceptance: "every legitimate
REGISTER and call in a concurrent SIPp run succeeds").

SIPp plays three parties on their own loopback addresses, none of which any attack uses:

* ``pbx`` on 127.0.0.61 stands for FreeSWITCH: it registers with its digest password
  (``legit_register.xml``) and answers every call delivered to its Contact (``-oocsf pbx_answer.xml``:
  ``tests/sipp/uas_answer.xml`` plus re-sending its 200 on a retransmitted INVITE or BYE, as a real
  UAS does when the flooded proxy in front of it loses a datagram);
* ``carol`` on 127.0.0.62 registers again and again (``legit_register.xml``: 401 challenge, then 200);
* ``carol`` on 127.0.0.63 calls ``pbx`` again and again (``legit_call.xml``: 407 challenge, then
  INVITE with credentials, 200, ACK, BYE).

``legit_register.xml`` and ``legit_call.xml`` are ``tests/sipp/register_auth.xml`` and
``uac_call_auth.xml`` plus what a UA's transaction layer does that SIPp's scenarios do not: a
retransmitted 401/407 arriving after the credentials were sent is absorbed (the node, stateless,
answers each retransmitted request, and SIPp retransmits when the flooded node is slow), not taken
for an unexpected message that aborts the call.

Both loops run at a user's pace (a REGISTER or a call a second or so, far under pike's 30 requests
per 2 s), bounded in count (``-m``) and time (``-timeout``); :meth:`Legitimate.stop` ends them with
SIPp's soft exit (no new calls, the running ones finish) and returns SIPp's own counters. The
harness is the tests' (``tests/support/sipp_harness.py``), so the suite and the tests drive SIPp
the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from support.sipp_harness import Sipp, SippProcess, SippResult  # noqa: E402

HERE = Path(__file__).resolve().parent
PBX = ("pbx", "127.0.0.61")
REGISTRAR_USER = ("carol", "127.0.0.62")
CALLER = ("carol", "127.0.0.63")


class Legitimate:
    """The legitimate traffic: start it before the attacks, :meth:`stop` it after them."""

    def __init__(self, workdir: Path, address: str, users: dict[str, str], rate: float, limit: int,
                 seconds: float) -> None:
        self.workdir, self.address, self.users = workdir, address, users
        self.rate, self.limit, self.seconds = rate, limit, seconds
        self.pbx: SippProcess | None = None
        self.registrar_loop: SippProcess | None = None
        self.call_loop: SippProcess | None = None

    def _auth(self, user: str) -> list[str]:
        return ["-au", user, "-ap", self.users[user]]

    def start(self) -> None:
        user, ip = PBX
        self.pbx = Sipp(self.workdir, "udp", local_ip=ip).start(
            HERE / "legit_register.xml", self.address, user=user, ooc=HERE / "pbx_answer.xml",
            duration_ms=int(self.seconds * 1000) + 60_000, timeout=self.seconds + 90, extra=self._auth(user),
            name="legit-pbx")
        self.pbx.wait_for_message(r"^SIP/2.0 200 OK", timeout=30)
        user, ip = REGISTRAR_USER
        self.registrar_loop = Sipp(self.workdir, "udp", local_ip=ip).start(
            HERE / "legit_register.xml", self.address, user=user, calls=self.limit, rate=self.rate,
            duration_ms=0, keys={"expires": 300}, timeout=self.seconds + 60, extra=self._auth(user),
            name="legit-register")
        user, ip = CALLER
        self.call_loop = Sipp(self.workdir, "udp", local_ip=ip).start(
            HERE / "legit_call.xml", self.address, user=PBX[0], keys={"caller": user}, calls=self.limit,
            rate=self.rate, duration_ms=200, timeout=self.seconds + 60, extra=self._auth(user), name="legit-call")

    def stop(self) -> dict[str, Any]:
        """Soft-stop the loops (the calls in progress finish), then the PBX; SIPp's counters."""
        out: dict[str, Any] = {}
        for label, proc in (("REGISTERs", self.registrar_loop), ("calls", self.call_loop)):
            if proc is None:
                continue
            result: SippResult = proc.stop(grace=35.0) if proc.running() else proc.result()
            out[f"legitimate {label} ok"] = result.successful_calls
            out[f"legitimate {label} failed"] = result.failed_calls
            if result.failed_calls:
                out[f"legitimate {label} log"] = str(result.workdir)
        if self.pbx is not None:
            answered = sum(1 for m in self.pbx.result().received() if m.method == "INVITE")
            self.pbx.stop(grace=2.0)
            out["INVITEs delivered to the PBX"] = answered
        return out
