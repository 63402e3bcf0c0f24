"""Call records without sockets: the records' JSON and OpenSIPS rows, :class:`Accounting` over parsed
messages and a real dialog table on a ``task.Clock``, the JSON-lines file, and the ``[acc]``
configuration. ``test_e2e_acc.py`` runs 100 SIPp calls through a node into MariaDB."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import pytest_twisted
from support.ports import free_port
from support.proxy import ALICE_FLOW, BOB, answer, invite, wire
from support.transport import sleep
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from edgeproxy.acc import Accounting, CallRecord
from edgeproxy.acc.settings import AccSettings
from edgeproxy.acc.writers import AccTable, JsonLinesFile
from edgeproxy.config import ConfigError, load_config
from edgeproxy.dialog import DialogTable
from edgeproxy.sip import Request


class Kept:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def write(self, record: CallRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def record(**changes: object) -> CallRecord:
    base = dict(kind="attempt", method="INVITE", from_uri="sip:alice@example.com", to_uri="sip:bob@example.com",
                from_tag="a1", to_tag="b1", call_id="c" * 80, sip_code=486, sip_reason="Busy Here " * 5,
                time=1_700_000_000.5, setup_time=2.25, duration=0.0, source="udp:192.0.2.20:5060",
                destination="udp:192.0.2.10:5062")
    base.update(changes)
    return CallRecord(**base)  # type: ignore[arg-type]


def test_rows_have_opensips_columns_and_sizes() -> None:
    missed = record()
    assert missed.missed and not missed.in_acc_table
    row = missed.missed_row()
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_000.5))
    assert row == ("INVITE", "a1", "b1", "c" * 64, "486", ("Busy Here " * 5)[:32], local, 2, local)
    cdr = record(kind="cdr", sip_code=200, sip_reason="OK", duration=61.0014, setup_time=3.5)
    assert cdr.in_acc_table and not cdr.missed
    method, _, _, _, code, reason, when, duration, ms, setuptime, created = cdr.acc_row()
    assert (code, reason, duration, ms, setuptime) == ("200", "OK", 62, 61001, 3)
    assert created == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_000.5 - 3.5))
    answered_with_dialog = record(sip_code=200, sip_reason="OK", dialog=True)
    assert not answered_with_dialog.in_acc_table and not answered_with_dialog.missed  # its cdr row follows
    assert record(sip_code=200, sip_reason="OK").in_acc_table  # no dialog: the 2xx is the row


def test_json_line_per_kind() -> None:
    attempt = json.loads(record().json())
    assert attempt["kind"] == "attempt" and attempt["dialog"] is False and "end_reason" not in attempt
    assert attempt["setup_time"] == 2.25 and attempt["call_id"] == "c" * 80  # the file keeps it whole
    cdr = json.loads(record(kind="cdr", end_reason="Upstream BYE", duration=1.23456).json())
    assert cdr["end_reason"] == "Upstream BYE" and cdr["duration"] == 1.235 and "dialog" not in cdr


def test_accounting_makes_an_attempt_and_a_cdr_from_a_dialog(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1000)
    kept = Kept()
    acc = Accounting([kept, JsonLinesFile(str(tmp_path / "calls.jsonl"))], clock, wall=lambda: 1_700_000_100.0)
    table = DialogTable(listeners=[acc])
    request = wire(invite())
    assert isinstance(request, Request)
    dlg = table.create(request, clock.seconds(), None, ())
    clock.advance(3)
    ok = answer(request, 200)
    table.confirm(dlg, ok, clock.seconds(), None, ())
    acc.invite_final(request, ok, ALICE_FLOW, BOB, 3.0, True)
    clock.advance(42.5)
    table.end(dlg, "Upstream BYE")
    acc.close()
    attempt, cdr = kept.records
    assert (attempt.kind, attempt.sip_code, attempt.setup_time, attempt.time) == ("attempt", 200, 3.0, 1_700_000_097.0)
    assert (attempt.source, attempt.destination, attempt.dialog) == ("udp:192.0.2.20:5060", "udp:192.0.2.10:5062", True)
    assert (attempt.from_tag, attempt.to_tag, attempt.call_id) == ("a1", "b1", "call-1@192.0.2.20")
    assert (cdr.kind, cdr.duration, cdr.setup_time, cdr.end_reason) == ("cdr", 42.5, 3.0, "Upstream BYE")
    assert (cdr.from_uri, cdr.to_uri, cdr.to_tag) == ("sip:alice@example.com", "sip:bob@example.com", "b1")
    assert (cdr.source, cdr.destination) == ("udp:192.0.2.20:5060", "udp:192.0.2.10:5062")  # the attempt's
    assert cdr.time == 1_700_000_100.0 - 42.5
    assert acc.stats == {"attempts": 1, "missed": 0, "cdrs": 1}
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["attempt", "cdr"]


def test_acc_configuration(tmp_path: Path) -> None:
    def load(text: str) -> object:
        path = tmp_path / "edge.toml"
        path.write_text(text)
        return load_config(str(path))

    assert load("").acc is None  # type: ignore[attr-defined]
    config = load('[acc]\nfile = "calls.jsonl"\n')
    assert config.acc == AccSettings(file=str(tmp_path / "calls.jsonl"))  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="acc needs file"):
        load("[acc]\n")
    with pytest.raises(ConfigError, match="acc.file: no such directory"):
        load('[acc]\nfile = "nowhere/calls.jsonl"\n')
    with pytest.raises(ConfigError, match="acc.db_url"):
        load('[acc]\ndb_url = "postgres://x/y"\n')
    with pytest.raises(ConfigError, match="acc.table"):
        load('[acc]\nfile = "c.jsonl"\ntable = "acc; DROP TABLE x"\n')


@pytest_twisted.ensureDeferred
async def test_a_database_that_is_down_costs_counts_and_one_line_not_calls() -> None:
    """Rows go to a MySQL port where nothing listens: each insert fails, is counted, and only the first
    failure of the streak is logged; writing never raises to the caller (the call goes on)."""
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    table = AccTable(f"mysql://root@127.0.0.1:{free_port()}/test", reactor=reactor, timeout=1.0)
    try:
        table.write(record())  # a missed call
        table.write(record(kind="cdr", sip_code=200, sip_reason="OK", duration=3.0))
        for _ in range(200):
            if table.stats["failed"] == 2:
                break
            await sleep(0.05)
        assert table.stats == {"rows": 0, "failed": 2}
        errors = [e for e in seen if e.get("log_namespace") == "edgeproxy.acc"]
        assert len(errors) == 1 and "cannot write the record of" in formatEvent(errors[0])
    finally:
        globalLogPublisher.removeObserver(seen.append)
        await table.close()
