"""The RFC 3326 Reason of the CANCELs edgeproxy sends, end to end, as OpenSIPS's ``tm`` writes them.

Over real loopback UDP: ``twistd edgeproxy`` with a small route (``fixtures/relay_route.py``) that
relays every INVITE to one SIPp "FreeSWITCH" that rings and never answers (``uas_noanswer.xml``,
127.0.0.22), and SIPp callers:

* the caller gives up (``uac_cancel.xml``) with ``Reason: SIP;cause=200;text="Call completed
  elsewhere"`` (a forking UA whose other device took the call): FreeSWITCH's CANCEL carries that
  Reason, so it does not log a missed call (``[proxy] pass_cancel_reason``, OpenSIPS's
  ``pass-reason-hdr``);
* the route gives the ringing server ``$T_fr_inv_timeout = 1``: the node CANCELs it with OpenSIPS's
  ``Reason: SIP;cause=480;text="NO_ANSWER"`` and the caller gets 408 (``uac_expect.xml``).

Every SIPp run is bounded; the processes are stopped by PID.
"""

from __future__ import annotations

from pathlib import Path

from support.ports import free_port
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp

FS = "127.0.0.22"

ROUTE = Path(__file__).parent / "fixtures" / "relay_route.py"


def cancels_received(result) -> list[list[str]]:
    return [m.header("Reason") for m in result.received() if m.method == "CANCEL"]


def run(tmp_path: Path, params: dict[str, object], caller: str, keys: dict[str, object]):
    require_sipp()
    fs_port = free_port(FS)
    config = {"route_params": {"fs": f"{FS}:{fs_port}", **params}}
    with edgeproxy_node(tmp_path / "node", config=config, transports=("udp",), route=str(ROUTE)) as node, \
            Sipp(tmp_path / "fs", "udp", local_ip=FS).start("uas_noanswer", port=fs_port, calls=1,
                                                           timeout=30) as fs:
        result = Sipp(tmp_path / "caller", "udp").run(caller, node.address, user="fs", timeout=20,
                                                      keys={"domain": LOOPBACK, **keys})
        fs_result = fs.wait(15)
    return result, fs_result


def test_the_callers_reason_reaches_the_callee(tmp_path: Path) -> None:
    reason = 'SIP;cause=200;text="Call completed elsewhere"'
    result, fs_result = run(tmp_path, {}, "uac_cancel", {"reason": reason})
    result.assert_ok()
    assert cancels_received(fs_result) == [[reason]], fs_result.describe()


def test_a_ringing_branch_timed_out_is_cancelled_with_no_answer(tmp_path: Path) -> None:
    result, fs_result = run(tmp_path, {"fr_inv_timeout": 1}, "uac_expect", {"expect_code": 408})
    result.assert_ok()
    assert cancels_received(fs_result) == [['SIP;cause=480;text="NO_ANSWER"']], fs_result.describe()
