"""Issue 16, finding 3: a reply that cannot be sent. A request with thousands of compact ``v:`` Via
lines got a 513 copying every Via, expanded to ``Via:`` -- 96 KB, over the UDP maximum: ``sendto``
failed with EMSGSIZE, logged at critical with a traceback, and nothing was sent (over TCP the 96 KB
went out, 1.6 times the request).

The reply to a malformed request now copies what RFC 3261 §8.2.6 needs to reach the client and
match its transaction -- the top Via value, and From, To, Call-ID, CSeq when they are of sane size --
and is never larger than a datagram. Checked on the core's reply builder, then over real UDP and TCP
sockets against a real ``twistd edgeproxy``.
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest
from support.sipp_harness import EdgeproxyNode, edgeproxy_node

from edgeproxy.sip.errors import SipParseError
from edgeproxy.sip.parser import MAX_ERROR_REPLY, error_response, parse_datagram


def many_vias(count: int, port: int = 5060, host: str = "127.0.0.1") -> bytes:
    top = f"v: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-top;rport\r\n"
    rest = "".join(f"v: SIP/2.0/UDP 10.{i // 250 % 250}.{i % 250}.1\r\n" for i in range(count - 1))
    return (f"INVITE sip:bob@{host} SIP/2.0\r\n{top}{rest}Max-Forwards: 70\r\nFrom: <sip:m@example.net>;tag=1\r\n"
            f"To: <sip:bob@{host}>\r\nCall-ID: many-vias\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


def error_of(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as caught:
        parse_datagram(data)
    return caught.value


def test_513_to_many_vias_copies_only_the_top_via_rfc3261_8_2_6() -> None:
    data = many_vias(2200)
    assert 55_000 < len(data) <= 65_535
    exc = error_of(data)
    assert exc.status == 513
    reply = error_response(exc)
    assert reply is not None
    wire = reply.to_bytes()
    assert len(wire) <= MAX_ERROR_REPLY
    assert reply.headers.get_all("via") == ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-top;rport"]
    assert reply.call_id == "many-vias" and reply.cseq.method == "INVITE"


def test_top_via_line_with_many_values_keeps_the_first_value_only() -> None:
    rest = [f"SIP/2.0/UDP 10.0.0.{i}" for i in range(300)]
    vias = ", ".join(["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-first", *rest])
    data = (f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: {vias}\r\nFrom: <sip:m@x>;tag=1\r\nTo: <sip:bob@x>\r\n"
            "Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\nBroken header line\r\n\r\n").encode()
    reply = error_response(error_of(data))
    assert reply is not None
    assert reply.headers.get_all("via") == ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-first"]


def test_oversized_from_to_and_reason_are_left_out_not_echoed() -> None:
    huge = "x" * 20_000
    data = (f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
            f"From: <sip:{huge}@x>;tag=1\r\nTo: <sip:bob@x>;p={huge}\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\nBroken header line\r\n\r\n").encode()
    reply = error_response(error_of(data))
    assert reply is not None
    assert len(reply.to_bytes()) <= MAX_ERROR_REPLY
    assert reply.headers.get("from") is None and reply.headers.get("to") is None
    assert reply.headers.get("via") and reply.headers.get("cseq")


def test_reason_phrase_with_input_is_bounded() -> None:
    exc = SipParseError("Not a SIP URI: " + "y" * 5000, 416, is_request=True,
                        partial=[("via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1"), ("cseq", "1 INVITE")])
    reply = error_response(exc)
    assert reply is not None and len(reply.reason) <= 100


# -- on the wire -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    with edgeproxy_node(tmp_path_factory.mktemp("error-replies"), transports=("udp", "tcp")) as n:
        yield n


def test_many_vias_over_udp_get_one_small_513_and_no_traceback(node: EdgeproxyNode) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        data = many_vias(2200, s.getsockname()[1])
        assert 55_000 < len(data) <= 65_507
        s.sendto(data, (node.host, node.port))
        s.settimeout(3.0)
        reply = s.recv(65535)
    assert reply.startswith(b"SIP/2.0 513 ")
    assert len(reply) <= MAX_ERROR_REPLY
    assert reply.lower().count(b"\nvia:") == 1
    log = node.log()
    assert "Traceback" not in log and "EMSGSIZE" not in log and "Message too long" not in log
    assert node.running()


def test_many_vias_over_tcp_get_one_small_513(node: EdgeproxyNode) -> None:
    with socket.create_connection((node.host, node.port), timeout=3.0) as s:
        data = many_vias(2200, s.getsockname()[1])
        s.sendall(data)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(65535)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"SIP/2.0 513 ")
    assert len(reply) <= MAX_ERROR_REPLY < len(data)
    assert reply.lower().count(b"\nvia:") == 1
