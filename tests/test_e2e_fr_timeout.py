"""Per-transaction timers end to end: a dead media server is left after ``$T_fr_timeout``, not
after Timer B.

Over real loopback UDP: ``twistd edgeproxy`` with the RFC's own T1 (0.5 s, so Timer B is 32 s),
two SIPp "FreeSWITCH" servers -- one that takes the INVITE and never says a word
(``uas_silent.xml``, 127.0.0.22) and one that answers (``uas_answer.xml``, 127.0.0.23) -- and a SIPp
caller (``uac_call.xml``). The route sends every call to the silent one with ``msg.T_fr_timeout =
2``; its failure route sees the local 408 (``t_check_status("408")``, ``t_local_replied("all")``)
and relays to the other. The call must complete, long before Timer B could have ended the first
branch; the bounds are generous, the 2 s is not measured.
"""

from __future__ import annotations

import time
from pathlib import Path

from support.ports import free_port
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp

DEAD = "127.0.0.22"
ALIVE = "127.0.0.23"

ROUTE = '''
def request_route(msg):
    if not msg.is_method("INVITE|ACK|BYE"):
        msg.sl_send_reply(200, "OK")  # the harness's start-up OPTIONS must not reach the servers
        return
    if msg.has_totag():
        if msg.loose_route():
            msg.t_relay()
        return
    msg.record_route()
    msg.T_fr_timeout = msg.params["fr_timeout"]
    msg.du = "sip:" + msg.params["dead"]
    msg.t_on_failure(failover)
    msg.t_relay()


def failover(msg):
    msg.xlog(f"FAILOVER status={msg.reply_code} local={msg.t_local_replied('all')}")
    if msg.t_check_status("408|5[0-9][0-9]") and msg.t_local_replied("all"):
        msg.du = "sip:" + msg.params["alive"]
        msg.t_relay()
'''


def test_silent_server_is_left_after_fr_timeout_and_the_call_completes_on_the_next(tmp_path: Path) -> None:
    require_sipp()
    dead_port, alive_port = free_port(DEAD), free_port(ALIVE)
    route = tmp_path / "fr_route.py"
    route.write_text(ROUTE, encoding="utf-8")
    config = {
        "timers": {"t1": 0.5, "t2": 4.0, "t4": 5.0, "timer_c": 120.0},  # Timer B = 64 * T1 = 32 s
        "route_params": {"fr_timeout": 2, "dead": f"{DEAD}:{dead_port}", "alive": f"{ALIVE}:{alive_port}"},
    }
    with edgeproxy_node(tmp_path / "node", config=config, transports=("udp",), route=str(route)) as node, \
            Sipp(tmp_path / "dead", "udp", local_ip=DEAD).start("uas_silent", port=dead_port) as dead, \
            Sipp(tmp_path / "alive", "udp", local_ip=ALIVE).start("uas_answer", port=alive_port) as alive:
        started = time.monotonic()
        caller = Sipp(tmp_path / "caller", "udp").run("uac_call", node.address, user="bob", timeout=25,
                                                       keys={"domain": LOOPBACK})
        elapsed = time.monotonic() - started
        caller.assert_ok()
        alive.wait_for_message(r"^BYE ", timeout=5)
        dead_seen = dead.stop()
        alive.stop()
        log = node.log()
    assert caller.successful_calls == 1
    assert [m.status for m in caller.received() if m.status is not None and m.status >= 200] == [200, 200]  # INVITE, BYE
    invites = [m for m in dead_seen.received() if m.method == "INVITE"]
    assert invites, "the silent server never got the INVITE"
    assert not [m for m in dead_seen.received() if m.method == "CANCEL"]  # no provisional: no CANCEL
    assert "FAILOVER status=408 local=True" in log
    assert elapsed < 25  # Timer B (32 s) would have ended the first branch only after 32 s
