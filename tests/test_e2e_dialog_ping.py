"""Dialog keepalive pings end to end (OpenSIPS ``create_dialog("Pp")``, ``options_ping_interval``):
the way the edge notices a UDP party that vanished mid-call, where no connection closes to say so.

Over real loopback UDP: ``twistd edgeproxy`` with a route (``fixtures/relay_route.py``) that makes
every INVITE a dialog with ``P`` and ``p`` and relays it to a SIPp "FreeSWITCH" (``uas_answer.xml``,
127.0.0.22); a SIPp phone on 127.0.0.31 calls (``uac_call.xml``). Both SIPp run with ``-aa``, which
answers in-dialog OPTIONS 200, as phones and FreeSWITCH do. ``options_ping_interval = 1``.

* a live call is pinged both ways every second and completes as usual, and each UA sees the
  numbers of the requests it receives in the dialog go up (RFC 3261 §12.2.1.1; the pings take
  numbers of their own, the phone's BYE reaches FreeSWITCH renumbered above them, and the phone's
  200 for it carries the number it sent -- OpenSIPS dialog's CSeq handling);
* the phone is SIGKILLed mid-call: its pings go unanswered, and after Timer F (64 x T1 = 6.4 s here)
  the node ends the call -- FreeSWITCH gets a BYE and answers it, and ``dlg_list`` is empty.

Every SIPp run is bounded; the processes are stopped by PID.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from support.mi import mi_result
from support.polling import wait_until
from support.ports import free_port
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, SippProcess, edgeproxy_node, require_sipp

FS = "127.0.0.22"
PHONE = "127.0.0.31"

ROUTE = Path(__file__).parent / "fixtures" / "relay_route.py"


@contextmanager
def pinged_call_setup(tmp_path: Path) -> Iterator[tuple[EdgeproxyNode, SippProcess, str]]:
    """The node (dialogs with ``Pp``, a 1 s interval, its MI) and FreeSWITCH answering one call."""
    require_sipp()
    fs_port, mi_port = free_port(FS), free_port()
    config = {"route_params": {"fs": f"{FS}:{fs_port}", "dialog_flags": "Pp"},
              "dialog": {"options_ping_interval": 1}, "mi": {"listen": f"{LOOPBACK}:{mi_port}"}}
    with edgeproxy_node(tmp_path / "node", config=config, transports=("udp",), route=str(ROUTE)) as node, \
            Sipp(tmp_path / "fs", "udp", local_ip=FS).start("uas_answer", port=fs_port, calls=1, timeout=40,
                                                           extra=["-aa"]) as fs:
        yield node, fs, f"http://{LOOPBACK}:{mi_port}/mi"


def pings(result) -> int:
    """In-dialog OPTIONS the SIPp agent received (and answered 200, ``-aa``)."""
    return sum(1 for m in result.received() if m.method == "OPTIONS")


def test_a_live_call_is_pinged_both_ways_and_completes(tmp_path: Path) -> None:
    with pinged_call_setup(tmp_path) as (node, fs, _):
        result = Sipp(tmp_path / "phone", "udp", local_ip=PHONE).run(
            "uac_call", node.address, user="fs", duration_ms=3500, timeout=20, extra=["-aa"],
            keys={"domain": LOOPBACK})
        fs_result = fs.wait(15)
    result.assert_ok()
    assert fs_result.successful_calls == 1, fs_result.describe()
    assert pings(result) >= 2 and pings(fs_result) >= 2, (pings(result), pings(fs_result))
    for agent in (result, fs_result):  # what each UA received in the dialog, ACK aside, goes up
        numbers = [cseq(m) for m in agent.received() if m.method not in (None, "ACK")]
        assert numbers == sorted(set(numbers)), numbers
    bye = only_one([m for m in fs_result.received() if m.method == "BYE"])
    assert cseq(bye) > max(cseq(m) for m in fs_result.received() if m.method == "OPTIONS")
    sent_bye = only_one([m for m in result.sent() if m.method == "BYE"])
    assert [cseq(m) for m in result.received() if m.status == 200 and "BYE" in m.header("CSeq")[0]] \
        == [cseq(sent_bye)]


def cseq(message) -> int:
    return int(message.header("CSeq")[0].split()[0])


def only_one(items: list) -> Any:
    assert len(items) == 1, items
    return items[0]


def test_a_phone_gone_mid_call_is_noticed_and_freeswitch_gets_a_bye(tmp_path: Path) -> None:
    with pinged_call_setup(tmp_path) as (node, fs, mi):
        phone = Sipp(tmp_path / "phone", "udp", local_ip=PHONE).start(
            "uac_call", node.address, user="fs", duration_ms=60_000, timeout=70, extra=["-aa"],
            keys={"domain": LOOPBACK})
        try:
            wait_until("the call is up", lambda: len(mi_result(mi, "dlg_list", wait=5)["Dialogs"]) == 1
                       and mi_result(mi, "dlg_list")["Dialogs"][0]["state"] == 4, 10)
            time.sleep(1.5)  # a ping or two answered by the live phone
            os.kill(phone.pid, signal.SIGKILL)
            killed = time.monotonic()
            fs_result = fs.wait(20)
            noticed = time.monotonic() - killed
        finally:
            phone.stop()
        assert mi_result(mi, "dlg_list")["Dialogs"] == []
        assert "answered its ping 408: BYE both ways" in node.log()
    assert fs_result.successful_calls == 1, fs_result.describe()  # it got the BYE and answered it
    assert [m.method for m in fs_result.received() if m.method == "BYE"] == ["BYE"]
    print(f"phone gone -> BYE to FreeSWITCH after {noticed:.1f} s")
    assert noticed < 1 + 6.4 + 3, noticed  # interval + Timer F, with room for a loaded machine
