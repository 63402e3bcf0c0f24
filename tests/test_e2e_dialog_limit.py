"""A per-user call limit with dialog profiles, end to end (issue 13's acceptance): a real node with
the shipped default route (``route_params.max_calls_per_user = 2``, refused with 403 "Too Many
Calls"), SIPp callers on UDP and SIPp phones that answer, reject or only ring. The counts are read
over the MI as an operator would (``profile_get_size``, ``dlg_list``, ``get_statistics``).

* two calls of one user are up: the third is refused with the route's status; once they end, a new
  call goes through;
* a bounded 1,000-call run mixing answered (500), cancelled (200), rejected (250) and timed-out (50:
  the dialog lifetime ends them with BYEs) calls leaves every count at 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from support.mi import mi_result
from support.phones import register_phone
from support.polling import wait_until
from support.ports import free_port
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, SippProcess, edgeproxy_node, require_sipp

LIFETIME = 6  # seconds: [dialog] default_timeout, so that long calls are timed out by the node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()
    mi_port = free_port(LOOPBACK)
    config = {
        "registrar": {"min_expires": 30},
        "mi": {"listen": f"{LOOPBACK}:{mi_port}"},
        "dialog": {"default_timeout": LIFETIME, "profiles_with_value": ["caller"]},
        "route_params": {"max_calls_per_user": 2, "max_calls_status": 403, "max_calls_reason": "Too Many Calls"},
    }
    with edgeproxy_node(tmp_path_factory.mktemp("limit"), config=config, log_level="info") as n:
        n.mi_url = f"http://{LOOPBACK}:{mi_port}/mi"  # type: ignore[attr-defined]
        yield n


def mi(node: EdgeproxyNode, method: str, params: Any = None) -> Any:
    return mi_result(node.mi_url, method, params, wait=5)  # type: ignore[attr-defined]


def calls_of(node: EdgeproxyNode, user: str) -> int:
    return int(mi(node, "profile_get_size", ["caller", user])["Profile"]["count"])


def phone(node: EdgeproxyNode, tmp_path: Path, user: str, ooc: str, **keys: Any) -> SippProcess:
    return register_phone(Sipp(tmp_path / f"phone-{user}", "udp"), node.address, user, ooc, keys=keys,
                          duration_ms=120_000, timeout=130)


def test_third_concurrent_call_is_refused_and_a_new_one_goes_through_after(node: EdgeproxyNode,
                                                                            tmp_path: Path) -> None:
    answering = phone(node, tmp_path, "desk", "uas_answer")
    try:
        sipp = Sipp(tmp_path / "alice", "udp")
        two = sipp.start("uac_call", node.address, user="desk", calls=2, rate=20, duration_ms=2000, timeout=20,
                         keys={"caller": "alice"})
        wait_until("alice in 2 calls", lambda: calls_of(node, "alice") == 2, 10, step=0.1)
        third = sipp.run("uac_expect", node.address, user="desk", keys={"caller": "alice", "expect_code": 403})
        assert third.ok, third.describe()
        refused = [m for m in third.received() if m.status == 403]
        assert refused and "Too Many Calls" in refused[0].first_line
        assert calls_of(node, "alice") == 2  # the refused call never counted
        both = two.wait(30)
        assert both.successful_calls == 2, both.describe()
        wait_until("alice's calls ended", lambda: calls_of(node, "alice") == 0, 5, step=0.1)
        again = sipp.run("uac_call", node.address, user="desk", keys={"caller": "alice"})
        assert again.ok, again.describe()
        assert calls_of(node, "bob") == 0
    finally:
        answering.stop()


def test_counts_return_to_zero_after_a_mixed_run(node: EdgeproxyNode, tmp_path: Path) -> None:
    before = mi(node, "get_statistics", [["dialog:"]])
    phones = [phone(node, tmp_path, "ans", "uas_answer"), phone(node, tmp_path, "rej", "uas_reject"),
              phone(node, tmp_path, "ring", "uas_noanswer")]
    sipp = Sipp(tmp_path / "carol", "udp")
    limit = ["-l", "2"]  # at most 2 calls at once per caller: the limit is never what refuses them
    runs = {
        "answered": sipp.run("uac_call", node.address, user="ans", calls=500, rate=80, timeout=90, extra=limit,
                             keys={"caller": "carol"}),
        "cancelled": sipp.run("uac_cancel", node.address, user="ring", calls=200, rate=50, timeout=90,
                              extra=limit, keys={"caller": "dave"}),
        "rejected": sipp.run("uac_expect", node.address, user="rej", calls=250, rate=80, timeout=90,
                             extra=limit, keys={"caller": "erin", "expect_code": 486}),
    }
    for kind, result in runs.items():
        assert result.ok and result.failed_calls == 0, f"{kind}:\n{result.describe()}"
    # timed out: 50 calls (5 callers, 10 each) that outlive the dialog lifetime; the node BYEs both
    # sides of each
    timed = [f"t{i}" for i in range(5)]
    longs = [sipp.start("uac_call", node.address, user="ans", calls=10, rate=10, duration_ms=(LIFETIME + 3) * 1000,
                        timeout=60, extra=limit, keys={"caller": user}) for user in timed]
    wait_until("the long calls up", lambda: calls_of(node, "t0") > 0, 10, step=0.1)
    for p in longs:
        p.wait(90)
    try:
        wait_until("every dialog gone", lambda: not mi(node, "dlg_list")["Dialogs"], 15, step=0.1)
        for user in ("carol", "dave", "erin", *timed):
            assert calls_of(node, user) == 0, user
        assert mi(node, "profile_get_size", ["caller"])["Profile"]["count"] == 0
        after = mi(node, "get_statistics", [["dialog:"]])
        delta = {k: after[k] - before[k] for k in ("dialog:processed_dialogs", "dialog:failed_dialogs",
                                                  "dialog:expired_dialogs")}
        assert delta == {"dialog:processed_dialogs": 1000, "dialog:failed_dialogs": 450,
                         "dialog:expired_dialogs": 50}, delta
        assert after["dialog:active_dialogs"] == 0 and after["dialog:early_dialogs"] == 0
    finally:
        results = [p.stop() for p in phones]
    byes = [m for m in results[0].received() if m.method == "BYE"]
    assert len(byes) >= 550, len(byes)  # 500 from the callers, 50 from the node's lifetime ends
