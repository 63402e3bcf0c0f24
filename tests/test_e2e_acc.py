"""End to end: call records (``[acc]``) of 100 SIPp calls through ``twistd edgeproxy``.

Three phones registered with SIPp: bob answers (``uas_answer``), carol is busy (``uas_reject``, 486),
dave rings and never answers (``uas_noanswer``). 40 calls to bob talk for ``PAUSE`` ms and hang up,
20 to carol get 486, 20 to dave are cancelled by the caller (487) and 20 more to dave run into timer
C (408). The node writes JSON lines and rows of OpenSIPS's own ``acc`` / ``missed_calls`` tables in
MariaDB (their exact schema, ``tests/support/mariadb.py``):

* 100 attempt records, one per INVITE, with SIPp's Call-IDs and the status each caller got;
* 40 ended-call (cdr) records, for the answered calls only, each with a duration within 100 ms of the
  pause SIPp held between its ACK and its BYE;
* in the database, 40 ``acc`` rows with ``ms_duration`` and 60 ``missed_calls`` rows -- each call
  exactly once, as OpenSIPS's ``cdr`` + ``missed`` flags write it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from support.mariadb import ACC_SCHEMA, DB_URL, MISSED_CALLS_SCHEMA, connect_or_skip, unique_name
from support.sipp_harness import Sipp, SippResult, edgeproxy_node, require_sipp

PAUSE = 1000  # ms between the ACK and the BYE of an answered call


def call_ids(result: SippResult) -> set[str]:
    return {m.header("Call-ID")[0] for m in result.sent() if m.method == "INVITE"}


def test_100_calls_give_100_attempt_records_and_40_ended_calls(tmp_path: Path) -> None:
    require_sipp()
    conn = connect_or_skip()
    acc_table, missed_table = unique_name("acc"), unique_name("missed_calls")
    with conn.cursor() as cur:
        cur.execute(ACC_SCHEMA.format(table=acc_table))
        cur.execute(MISSED_CALLS_SCHEMA.format(table=missed_table))
    try:
        records = tmp_path / "calls.jsonl"
        config = {"acc": {"file": str(records), "db_url": DB_URL, "table": acc_table, "missed_table": missed_table},
                  "registrar": {"min_expires": 30}}
        with edgeproxy_node(tmp_path / "node", config=config, log_level="info") as node:
            sipp = Sipp(tmp_path / "sipp")
            phones = [sipp.start("register", node.address, user=user, ooc=ooc, duration_ms=120_000, timeout=130,
                                 keys={"expires": 300, **keys})
                      for user, ooc, keys in (("bob", "uas_answer", {}),
                                              ("carol", "uas_reject", {"code": 486, "reason": "Busy Here"}),
                                              ("dave", "uas_noanswer", {}))]
            try:
                for phone in phones:
                    phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
                answered = sipp.run("uac_call", node.address, user="bob", calls=40, rate=20, duration_ms=PAUSE,
                                    timeout=60).assert_ok()
                busy = sipp.run("uac_expect", node.address, user="carol", calls=20, rate=20,
                                keys={"expect_code": 486}).assert_ok()
                cancelled = sipp.run("uac_cancel", node.address, user="dave", calls=20, rate=20).assert_ok()
                unanswered = sipp.run("uac_expect", node.address, user="dave", calls=20, rate=20, timeout=60,
                                      keys={"expect_code": 408}).assert_ok()
            finally:
                for phone in phones:
                    phone.stop()
        lines = records.read_text().splitlines()
        with conn.cursor() as cur:
            cur.execute(f"SELECT method, callid, sip_code, sip_reason, duration, ms_duration, setuptime, time, created "
                        f"FROM `{acc_table}`")
            acc_rows = cur.fetchall()
            cur.execute(f"SELECT method, callid, sip_code, sip_reason FROM `{missed_table}`")
            missed_rows = cur.fetchall()
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{acc_table}`")
            cur.execute(f"DROP TABLE IF EXISTS `{missed_table}`")
        conn.close()

    data = [json.loads(line) for line in lines]
    attempts = [r for r in data if r["kind"] == "attempt"]
    cdrs = [r for r in data if r["kind"] == "cdr"]
    expected = {**dict.fromkeys(call_ids(answered), 200), **dict.fromkeys(call_ids(busy), 486),
                **dict.fromkeys(call_ids(cancelled), 487), **dict.fromkeys(call_ids(unanswered), 408)}
    assert len(expected) == 100
    assert len(attempts) == 100 and {r["call_id"]: r["sip_code"] for r in attempts} == expected
    for r in attempts:
        assert r["method"] == "INVITE" and r["from_uri"].startswith("sip:caller@") and r["from_tag"]
        assert r["source"].startswith("udp:127.0.0.1:") and r["setup_time"] >= 0
        assert r["destination"].startswith("udp:127.0.0.1:")  # every call was relayed to a phone
        assert r["dialog"] == (r["sip_code"] == 200)
    assert Counter(r["sip_code"] for r in attempts) == {200: 40, 486: 20, 487: 20, 408: 20}
    # the unanswered ones rang for timer C (4 s in the test timers)
    assert all(r["setup_time"] >= 3.9 for r in attempts if r["sip_code"] == 408)

    assert len(cdrs) == 40 and {r["call_id"] for r in cdrs} == call_ids(answered)
    for r in cdrs:
        assert abs(r["duration"] - PAUSE / 1000) <= 0.1, r
        assert r["end_reason"] == "Upstream BYE" and r["to_tag"] and r["sip_code"] == 200

    # the database: each call once, answered ones with their duration, the others as missed calls
    assert len(acc_rows) == 40 and {row[1] for row in acc_rows} == call_ids(answered)
    for method, _, code, reason, duration, ms, setuptime, time, created in acc_rows:
        assert (method, code, reason) == ("INVITE", "200", "OK")
        assert abs(ms - PAUSE) <= 100 and duration == math.ceil(ms / 1000)  # OpenSIPS rounds seconds up
        assert setuptime == 0 and created <= time
    assert len(missed_rows) == 60
    assert {row[1]: int(row[2]) for row in missed_rows} == {k: v for k, v in expected.items() if v != 200}
    assert {row[3] for row in missed_rows} >= {"Busy Here", "Request Terminated"}
