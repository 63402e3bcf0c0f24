"""Issue 16, finding 5: logs as an attack surface. One info line per malformed message, not rate
limited: 20,000 fuzzed datagrams wrote ~5,000 lines; a long fuzz run filled 38 rotated files. Now
malformed input and flood drops are logged aggregated -- the first event of a source in an interval
at once, then one line per source per interval with the counts -- and counted as statistics
(``core:bad_msg_hdr``).
"""

from __future__ import annotations

import re
import socket
import time
from typing import Iterator

import pytest
from support.sipp_harness import EdgeproxyNode, edgeproxy_node
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

from edgeproxy.proxy.noise import NoiseLog


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "edgeproxy.noise":
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def test_one_source_twenty_thousand_events_two_lines_per_interval(events: list[LogEvent]) -> None:
    clock = Clock()
    noise = NoiseLog(clock, interval=10.0)
    for i in range(20_000):
        noise.note("192.0.2.66", "malformed", "400 Missing Call-ID")
        if i % 2000 == 0:
            clock.advance(0.9)  # the burst spans ~9 s: one interval
    clock.advance(10.0)
    assert len(events) == 2 == noise.lines
    assert "19999 malformed" in formatEvent(events[1])
    assert noise.totals["malformed"] == 20_000


def test_a_long_attack_logs_at_most_two_lines_per_source_per_interval(events: list[LogEvent]) -> None:
    clock = Clock()
    noise = NoiseLog(clock, interval=10.0)
    for _second in range(120):  # two minutes, 200 events a second from one source
        for _ in range(200):
            noise.note("192.0.2.66", "malformed")
        clock.advance(1.0)
    assert noise.lines <= 2 * 12 + 2
    assert noise.totals["malformed"] == 24_000


def test_spoofed_sources_are_summed_beyond_max_sources(events: list[LogEvent]) -> None:
    clock = Clock()
    noise = NoiseLog(clock, interval=10.0, max_sources=20)
    for i in range(5000):
        noise.note(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "malformed")
    clock.advance(10.0)
    assert noise.lines == 20 + 1  # 20 first lines, one line for the 4,980 others
    assert "from 4980 other sources" in formatEvent(events[-1])


def test_the_message_context_is_read_for_the_line_only(events: list[LogEvent]) -> None:
    """The first event's line carries the message's Call-ID and branch; the events only counted
    after it never read the message (a flood of broken messages costs no context each)."""
    reads: list[str] = []

    class Seen:
        @property
        def call_id(self) -> str:
            reads.append("call_id")
            return "c-1@192.0.2.66"

        @property
        def top_via(self) -> object:
            reads.append("via")
            return type("Via", (), {"branch": "z9hG4bKflood"})()

    noise = NoiseLog(Clock(), interval=10.0)
    for _ in range(1000):
        noise.note("192.0.2.66", "malformed", "400 Bad CSeq (UDP)", Seen())  # type: ignore[arg-type]
    assert reads == ["call_id", "via"]
    assert len(events) == 1 and events[0]["call_id"] == "c-1@192.0.2.66" and events[0]["tx"] == "z9hG4bKflood"


def test_no_timer_while_idle() -> None:
    clock = Clock()
    noise = NoiseLog(clock)
    assert clock.getDelayedCalls() == []
    noise.note("192.0.2.1", "malformed")
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(10.0)
    assert clock.getDelayedCalls() == []


def test_a_source_toggling_at_the_pike_limit_is_reported_once_per_interval() -> None:
    """A source that hovers at the limit started and ended an episode every sampling unit: two lines
    per unit. Episodes within :data:`REPORT_INTERVAL` of the last reported one are only counted."""
    from edgeproxy.proxy.flood import REPORT_INTERVAL, FloodDetector, FloodSettings
    flood = FloodDetector(FloodSettings(sampling_time_unit=1.0, reqs_density_per_unit=10))
    now, reported = 0.0, []
    for _ in range(60):  # a minute: a burst of 15 in a tenth of a second, then 1.9 s quiet
        for i in range(15):
            reported.append(flood.check_and_report("192.0.2.66", now + i * 0.005)[1])
        now += 2.0
        reported.append(flood.check_and_report("192.0.2.66", now - 0.05)[1])
    episodes = flood.blocked_events
    lines = [r for r in reported if r is not None]
    assert episodes >= 50
    assert lines.count("blocked") <= 120 / REPORT_INTERVAL + 1
    assert lines.count("unblocked") <= lines.count("blocked")


# -- on the wire -------------------------------------------------------------------------------------

SOURCE = "127.0.0.9"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    with edgeproxy_node(tmp_path_factory.mktemp("noise"), log_level="info") as n:
        yield n


def test_two_thousand_malformed_datagrams_write_a_bounded_number_of_lines(node: EdgeproxyNode) -> None:
    before = node.log().count(SOURCE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((SOURCE, 0))
        s.settimeout(0.0)
        for i in range(2000):
            s.sendto(b"NOT SIP AT ALL %d\r\n\r\n" % i, (node.host, node.port))
            try:
                s.recv(65535)
            except OSError:
                pass
    time.sleep(1.0)
    lines = node.log().count(SOURCE) - before
    assert 1 <= lines <= 2, lines  # on main: one line per datagram
    assert node.running()


def test_autobahns_per_connection_lines_are_counted_not_repeated() -> None:
    """Autobahn's own lines ("dropping connection to peer ...") went out once per connection: a
    slowloris of 1,000 WebSocket connections wrote 2,000 lines. Through CountedLog each kind is
    written the 1st, 2nd, 4th ... time, with its count."""
    from edgeproxy.transport.autobahn_logging import CountedLog

    written: list[tuple[str, dict]] = []

    class Inner:
        def warn(self, fmt: str, **kw: object) -> None:
            written.append((fmt, kw))

        def debug(self, fmt: str, **kw: object) -> None:
            written.append(("debug", kw))

    log = CountedLog(Inner())
    for i in range(1000):
        log.warn("dropping connection to peer {peer} with abort={abort}: {reason}", peer=i, abort=True, reason="x")
    assert [kw["autobahn_count"] for _, kw in written] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    log.debug("frame {n}", n=1)
    assert written[-1][0] == "debug"  # debug lines pass as they are


def test_never_two_lines_about_one_source_within_a_second(events: list[LogEvent]) -> None:
    """Issue 16's acceptance, log lines <= 1 per source per second: a source whose first event comes
    just before the interval ends would have had its summary right after its first line; and one
    that keeps on gets no fresh "first" line at each new interval -- only the interval's counts."""
    clock = Clock()
    noise = NoiseLog(clock, interval=10.0)
    noise.note("192.0.2.1", "malformed")  # starts the interval
    clock.advance(9.95)
    said: list[tuple[float, str]] = []

    def observe(event: LogEvent) -> None:
        if event.get("source") == "192.0.2.66":
            said.append((clock.seconds(), formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(6000):  # 60 s, 100 events a second from 192.0.2.66, the first at 9.95 s
            noise.note("192.0.2.66", "malformed")
            clock.advance(0.01)
        clock.advance(30.0)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert 5 <= len(said) <= 8, said  # the first, then one per interval
    stamps = [t for t, _ in said]
    assert all(b - a >= 1.0 for a, b in zip(stamps, stamps[1:], strict=False)), stamps
    assert sum(int(c) for _, line in said[1:] for c in re.findall(r"(\d+) malformed", line)) == 5999


def test_autobahns_lines_that_name_the_peer_go_to_the_noise_log() -> None:
    """Per listener, autobahn's lines that name their peer ("dropping connection to peer
    tcp4:192.0.2.9:40000 ...") become counts of that source in the node's aggregated log (issue 16);
    IPv6 peers too."""
    from edgeproxy.transport.autobahn_logging import CountedLog, peer_host_of

    noted: list[tuple[str, str, str]] = []
    written: list[str] = []

    class Inner:
        def warn(self, fmt: str, **kw: object) -> None:
            written.append(fmt)

    log = CountedLog(Inner(), lambda host, kind, detail: noted.append((host, kind, detail)), "WSS")
    for _ in range(100):
        log.warn("dropping connection to peer {peer} with abort={abort}: {reason}", peer="tcp4:192.0.2.9:40000",
                 abort=True, reason="WebSocket opening handshake timeout")
    assert noted == [("192.0.2.9", "WSS dropped", "WebSocket opening handshake timeout")] * 100 and written == []
    log.warn("Auto ping/pong: received non-pending pong")  # names no peer: counted 1st, 2nd, 4th ...
    assert len(written) == 1
    assert peer_host_of("tcp6:::1:5060") == "::1" and peer_host_of("tcp6:[2001:db8::1]:5060") == "2001:db8::1"


def test_a_summary_keeps_the_most_severe_level_of_what_it_counts(events: list[LogEvent]) -> None:
    """An outage of our own (the subscriber database) goes through the NoiseLog at error level so the
    operator sees it, bounded like hostile input: the immediate line and the interval's summary are
    both errors; plain hostile input stays at info."""
    clock = Clock()
    noise = NoiseLog(clock, interval=10.0)
    for _ in range(5):
        noise.note("subscriber store", "credentials unavailable", "cannot connect", level=LogLevel.error)
        noise.note("127.0.0.9", "malformed", "400 Bad Request")
    clock.advance(10.0)
    assert [e["log_level"] for e in events if e.get("source") == "subscriber store"] == [LogLevel.error] * 2
    assert [e["log_level"] for e in events if e.get("source") == "127.0.0.9"] == [LogLevel.info] * 2
