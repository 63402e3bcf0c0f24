"""Issue 16, finding 1: reflection amplification. An unauthenticated request from a (spoofable) UDP
source must never get more than one reply datagram per datagram received: ``sl_send_reply`` is
stateless as OpenSIPS's ``sl`` module (a retransmitted request is answered again, nothing is
retransmitted on a timer), and a stateful final response to a source the route did not authenticate
is not retransmitted on Timer G (it is re-sent when the INVITE is). Transactions keep what they need
of a request (the §8.2.6.2 / §17.2.3 headers), not the request.

Sans-IO on a ``task.Clock`` (:class:`support.proxy.World`), then the same over a real UDP socket to a
real ``twistd edgeproxy``.
"""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest
from support.proxy import ALICE, ALICE_FLOW, World, invite, module, non2xx_ack, responses
from support.sipp_harness import EdgeproxyNode, edgeproxy_node

from edgeproxy.proxy.flood import FloodDetector, FloodSettings
from edgeproxy.proxy.settings import ProxySettings


def stateful_486(msg):
    msg.send_reply(486, "Busy Here")


def no_decision(msg):
    """A route that neither replies nor relays: the node answers ``no_reply_status`` statefully."""


def test_sl_send_reply_404_is_one_datagram_however_long_the_source_never_acks() -> None:
    world = World()
    sent = world.receive(invite("carol"), ALICE_FLOW)
    assert [s.message.status for s in sent] == [404]
    later = world.run_for(40.0, step=0.25)  # past Timer H (64*T1)
    assert later == [], later
    assert len(world.node.table) == 0  # stateless: no transaction waits for an ACK
    world.assert_drained()


def test_sl_send_reply_answers_each_retransmission_once_opensips_sl() -> None:
    world = World()
    for _ in range(3):
        sent = world.receive(invite("carol"), ALICE_FLOW)
        assert [s.message.status for s in sent] == [404]  # one reply per request received
    # the ACK of a stateless reply matches nothing and is never answered
    ack = non2xx_ack(sent[0].message, uri="sip:carol@example.com")  # type: ignore[arg-type]
    assert world.receive(ack, ALICE_FLOW) == []


@pytest.mark.parametrize("route", [stateful_486, no_decision], ids=["send_reply", "no_reply_status"])
def test_stateful_final_to_an_unauthenticated_udp_source_is_not_retransmitted_on_timer_g(route) -> None:
    world = World(module(route))
    first = world.receive(invite("carol"), ALICE_FLOW)
    assert len(responses(first)) == 1 and responses(first)[0].message.status >= 400
    assert world.run_for(40.0, step=0.25) == []  # on main: Timer G, 10 more copies until Timer H
    world.assert_drained()


def test_stateful_final_is_resent_once_per_retransmitted_invite() -> None:
    world = World(module(stateful_486))
    assert [s.message.status for s in world.receive(invite("carol"), ALICE_FLOW)] == [486]
    world.run_for(1.0)
    again = world.receive(invite("carol"), ALICE_FLOW)  # absorbed by the transaction: the 486 again
    assert [s.message.status for s in again] == [486]
    assert world.run_for(2.0) == []


def test_trusted_source_keeps_rfc3261_timer_g() -> None:
    """A source the operator trusts (``[pike] trusted``, the other nodes) has proven it receives:
    its finals are retransmitted as RFC 3261 §17.2.1 says."""
    world = World(module(stateful_486), flood=FloodDetector(FloodSettings(trusted=(ALICE.host,))))
    world.receive(invite("carol"), ALICE_FLOW)
    assert [s.message.status for s in world.run_for(2.0)] == [486, 486]  # G at 0.5 s and 1.5 s


def test_retransmission_can_be_switched_back_on() -> None:
    settings = ProxySettings(domains=("example.com",), retransmit_unauthenticated=True)
    world = World(module(stateful_486), settings)
    world.receive(invite("carol"), ALICE_FLOW)
    assert [s.message.status for s in world.run_for(2.0)] == [486, 486]


def test_an_answered_transaction_keeps_only_the_headers_it_needs() -> None:
    """10,000 INVITEs of 60 KB held ~570 MB for Timer H: the answered transaction now keeps the
    request line and Via/From/To/Call-ID/CSeq, no body and no other header."""
    world = World(module(stateful_486))
    body = "v=0\r\n" + "a=x-pad:" + "y" * 60_000 + "\r\n"
    big = invite("carol", extra=("Content-Type: application/sdp", *(f"X-Pad-{i}: {'z' * 100}" for i in range(40))))
    big = big.replace("Content-Length: 0\r\n\r\n", f"Content-Length: {len(body)}\r\n\r\n{body}")
    world.receive(big, ALICE_FLOW)
    (tx,) = list(world.node.table)
    kept = tx.request
    assert kept.body == b""
    assert sorted({key for key, _, _ in kept.headers.items()}) == ["call-id", "cseq", "from", "to", "via"]
    assert sum(len(v) for _, _, v in kept.headers.items()) < 400
    # and it still matches its retransmissions (§17.2.3) and its ACK
    again = world.receive(big, ALICE_FLOW)
    assert [s.message.status for s in again] == [486]
    assert world.receive(non2xx_ack(again[0].message, uri="sip:carol@example.com"), ALICE_FLOW) == []  # type: ignore[arg-type]
    world.assert_drained()


# -- on the wire -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    with edgeproxy_node(tmp_path_factory.mktemp("amplification")) as n:
        yield n


def _invite(node: EdgeproxyNode, port: int, tag: str) -> bytes:
    return (f"INVITE sip:nobody-{tag}@{node.host}:{node.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{tag};rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:mallory@example.net>;tag={tag}\r\nTo: <sip:nobody-{tag}@{node.host}>\r\n"
            f"Call-ID: {tag}@amp\r\nCSeq: 1 INVITE\r\nContact: <sip:m@127.0.0.1:{port}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def _collect(s: socket.socket, seconds: float) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            out.append(s.recv(65535))
        except socket.timeout:
            break
    return out


def test_one_unacked_invite_gets_one_reply_datagram_on_the_wire(node: EdgeproxyNode) -> None:
    """The issue's probe: an INVITE to an unknown user that is never ACKed. With the test timers
    (T1 = 0.1 s, Timer H = 6.4 s) main sent the 404 again and again on Timer G."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        request = _invite(node, port, "amp1")
        s.sendto(request, (node.host, node.port))
        replies = _collect(s, 2.0)
        assert len(replies) == 1, [r.split(b"\r\n", 1)[0] for r in replies]
        assert replies[0].startswith(b"SIP/2.0 404 ")
        assert len(replies[0]) <= len(request) + 200  # bytes out: a small constant over bytes in
        # a retransmission gets the reply again: one per datagram
        s.sendto(request, (node.host, node.port))
        assert len(_collect(s, 1.0)) == 1
    assert node.running()
