"""Autobahn's debug-log arguments are formatted only when a debug line is written
(``edgeproxy.transport.autobahn_logging``), and come out as before when it is."""

from __future__ import annotations

from pprint import pformat as real_pformat

import autobahn.twisted.websocket as twisted_ws
import autobahn.websocket.protocol as protocol
from autobahn.util import hltype as real_hltype
from autobahn.util import hlval as real_hlval
from twisted.logger import Logger, formatEvent

from edgeproxy.transport import ws  # noqa: F401 - importing the transport applies it
from edgeproxy.transport.autobahn_logging import defer_debug_formatting


class Costly:
    """Counts how often it is turned into text."""

    def __init__(self) -> None:
        self.formatted = 0

    def __repr__(self) -> str:
        self.formatted += 1
        return "Costly()"


def test_arguments_are_not_formatted_until_the_line_is():
    costly = Costly()
    attrs = protocol.pformat([("option", costly, "Factory")])
    peer = twisted_ws.hlval(costly)
    assert costly.formatted == 0  # what a discarded debug line used to pay for
    assert str(attrs) == real_pformat([("option", costly, "Factory")])
    assert f"{peer}" == real_hlval(costly)


def test_a_written_debug_line_reads_as_before():
    events = []
    log = Logger(observer=events.append)
    func = protocol.WebSocketProtocol.sendData
    log.debug("{func} sent {data_len} bytes for peer {peer}", func=protocol.hltype(func),
              data_len=protocol.hlval(12), peer=protocol.hlval("tcp4:127.0.0.1:5060"))
    assert formatEvent(events[0]) == (f"{real_hltype(func)} sent {real_hlval(12)} bytes for peer "
                                      f"{real_hlval('tcp4:127.0.0.1:5060')}")


def test_timings_still_print_and_applying_twice_changes_nothing():
    timings = protocol.Timings()
    timings.track("start")
    assert isinstance(str(timings), str) and "start" in str(timings)
    assert defer_debug_formatting() == []
