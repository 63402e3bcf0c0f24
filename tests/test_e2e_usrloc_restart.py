"""Acceptance, end to end: a node with write-back persistence is killed with SIGKILL and restarted;
its UDP contacts are callable again without any REGISTER.

The real ``twistd edgeproxy`` with ``[usrloc] working_mode_preset = "single-instance-sql-write-back"``
(``timer_interval = 2``), once on an embedded SQLite file and once on OpenSIPS's ``location`` table
in MariaDB. 10,000 users register over UDP (a raw REGISTER loader: SIPp's one-call-per-user ladder
would take minutes), three of them to a SIPp UAS. Then:

* after a write-back flush, a last batch of users registers and the node is killed (``kill -9``)
  before the next one: the batch is what the last interval loses -- the loss is measured and must
  equal the changes pending at the kill (``usrloc:db_pending_aors``; measured: 50 of 50, i.e. all
  of the last interval's changes and nothing before them);
* users registered with an 8 s expiry and written by a flush expire while the node is down: they are gone
  after the restart;
* ``ul_sync`` rewrites the table from memory;
* the restarted node (same configuration) answers with every flushed contact -- ``get_statistics``
  ``usrloc:`` and ``ul_dump brief`` through the ``opensips`` MI client -- and SIPp calls to the three
  UAS users complete through it, without any REGISTER having been sent to the new process.

The timings (registration, restart-to-answering, load) are printed (``-s``), not asserted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import mariadb
from support.polling import wait_until
from support.ports import free_port
from support.registrations import Registration, register_many
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp

try:
    from opensips.mi import OpenSIPSMI
except ImportError:  # pragma: no cover - installed by .[test]; under CI a missing client fails
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the opensips package is not installed (pip install '.[test]')", allow_module_level=True)

USERS = 10_000
CALLEES = ("callee0", "callee1", "callee2")
SHORT = 20  # users whose registration expires while the node is down
SHORT_EXPIRES = 8
LATE = 50  # users registered after the last flush, right before the kill


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/location.db"
        return
    conn = mariadb.connect_or_skip()
    table = mariadb.unique_name("location")
    request.node.table = table
    try:
        yield mariadb.DB_URL + "#" + table
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.close()


def stats(mi: Any) -> dict[str, int]:
    return mi.execute("get_statistics", {"statistics": ["usrloc:"]})


def test_sigkill_and_restart_keeps_the_udp_contacts(db_url: str, tmp_path: Path) -> None:
    require_sipp()
    url, _, table = db_url.partition("#")
    port, mi_port = free_port(), free_port()
    config = {
        "registrar": {"min_expires": 1},
        "usrloc": {"working_mode_preset": "single-instance-sql-write-back", "db_url": url,
                   "table": table or "location", "timer_interval": 2},
        "mi": {"listen": f"{LOOPBACK}:{mi_port}"},
    }
    workdir = tmp_path / "node"
    mi = OpenSIPSMI(conn="http", url=f"http://{LOOPBACK}:{mi_port}/mi")
    sipp = Sipp(tmp_path / "sipp")
    uas = sipp.start("uas_answer", user="callee", calls=len(CALLEES), timeout=120)
    try:
        with edgeproxy_node(workdir, config=config, transports=("udp",), port=port, log_level="info") as node:
            regs = [Registration(f"u{i:05d}", f"sip:u{i:05d}@{LOOPBACK}:9") for i in range(USERS - len(CALLEES))]
            regs += [Registration(c, f"sip:{c}@{LOOPBACK}:{uas.port}") for c in CALLEES]
            outcome = register_many((LOOPBACK, port), regs)
            assert outcome.ok == len(regs), (outcome.statuses, outcome.unanswered[:5])
            print(f"\n{len(regs)} REGISTERs answered 200 in {outcome.seconds:.2f} s")
            # everything is written at a flush; then the late batch, then the crash before the next flush
            wait_until("the write-back flush", lambda: stats(mi)["usrloc:db_written_contacts"] >= len(regs)
                       and stats(mi)["usrloc:db_pending_aors"] == 0, timeout=30)
            # short registrations, written by the next flush, to expire while the node is down
            shorts = [Registration(f"short{i}", f"sip:short{i}@{LOOPBACK}:9", expires=SHORT_EXPIRES)
                      for i in range(SHORT)]
            assert register_many((LOOPBACK, port), shorts).ok == SHORT
            # the last short was answered by now; its row's expires is that time + SHORT_EXPIRES rounded
            # UP to a whole second (the column is an integer): up to 1 s after the in-memory expiry
            short_at = time.monotonic()
            flushes = stats(mi)["usrloc:db_flushes"]
            wait_until("the next flush", lambda: stats(mi)["usrloc:db_flushes"] > flushes
                       and stats(mi)["usrloc:db_pending_aors"] == 0, timeout=30)
            late = [Registration(f"late{i}", f"sip:late{i}@{LOOPBACK}:9") for i in range(LATE)]
            assert register_many((LOOPBACK, port), late).ok == LATE
            pending = stats(mi)["usrloc:db_pending_aors"]
            flushed = node.log().count("usrloc: wrote")
            node.kill()
            # a write-back flush between the count and the kill (a slow machine) would write some of them
            exact = node.log().count("usrloc: wrote") == flushed
        print(f"killed with {pending} AoRs changed since the last write-back flush")
        time.sleep(max(0.0, short_at + SHORT_EXPIRES + 1.5 - time.monotonic()))  # the shorts' rows expire meanwhile

        started = time.monotonic()
        with edgeproxy_node(workdir, config=config, transports=("udp",), port=port, log_level="info") as node:
            ready = time.monotonic() - started
            after = stats(mi)
            dump = mi.execute("ul_dump", ["brief"])
            aors = {a["AOR"] for a in dump["Domains"][0]["AORs"]}
            load_line = next(line for line in node.log().splitlines() if "usrloc: loaded" in line)
            print(f"restarted node answered {ready:.2f} s after it was started; {load_line.split('] ', 1)[1]}")
            lost_late = sum(1 for r in late if r.user not in aors)
            print(f"lost: {lost_late} of the {LATE} registered after the last flush ({pending} were pending)")

            assert all(r.user in aors for r in regs if not r.user.startswith("short"))
            assert not any(a.startswith("short") for a in aors)  # expired while down: gone
            assert after["usrloc:location-contacts"] == len(aors) == USERS + (LATE - lost_late)
            assert after["usrloc:db_loaded_contacts"] == len(aors)
            assert after["usrloc:db_expired_on_load"] == SHORT
            # at most the last interval's changes: exactly those pending at the kill (fewer if a flush
            # came between the count and the kill, on a slow machine)
            assert lost_late == pending if exact else lost_late <= pending
            assert pending <= LATE
            # calls to users the new process never saw a REGISTER from
            for callee in CALLEES:
                Sipp(tmp_path / f"call-{callee}").run("uac_call", node.address, user=callee, duration_ms=100,
                                                      timeout=15, keys={"domain": LOOPBACK}).assert_ok()
            # MI ul_sync: the SQL table rewritten from memory, counted
            assert mi.execute("ul_sync", ["location"]) == "OK"
            assert stats(mi)["usrloc:db_syncs"] == 1
    finally:
        uas.stop()
