"""End to end with the stock SIP-over-WebSocket libraries: JsSIP 3.13 and SIP.js 0.21 (from the npm
registry, locked in ``tests/webrtc/package-lock.json``) run in Node 20 and connect to ``twistd
edgeproxy`` over WSS, trusting the test CA; SIPp plays the SIP phones on UDP.

What is proven here is issue 4's sentence: the browsers register over WSS, call a UDP phone, are
called by one, call each other, and every in-dialog request -- ACK, BYE, both ways -- finds its way
back over the right WebSocket (RFC 7118 §5, RFC 5626 flow tokens in Record-Route, double
Record-Route across transports). Un-registering, and a WebSocket that closes, leave nothing behind:
calls to that user get 404 at once. The last tests check the WebSocket policy of the deployed node
(``[ws]`` origins and message size) with the same clients.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.phones import register_phone
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, SippProcess, require_sipp
from support.webrtc_harness import WebNode, header, require_node, sip_messages, wss_node

DOMAIN = "example.test"
ALLOWED_ORIGIN = "https://app.example.test"
WS_MAX = 8192


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    require_node()
    require_sipp()
    config = {
        "registrar": {"min_expires": 30},
        "ws": {"origins": [ALLOWED_ORIGIN], "max_message_size": WS_MAX, "path": "*"},
    }
    with wss_node(tmp_path_factory.mktemp("webrtc"), DOMAIN, config) as web:
        yield web


def udp_phone(web: WebNode, tmp_path: Path, user: str, ooc: str = "uas_answer") -> SippProcess:
    """A SIP phone on UDP (SIPp): REGISTER, then answer calls with ``ooc`` until stopped."""
    return register_phone(Sipp(tmp_path / f"phone-{user}", "udp"), web.node.address, user, ooc,
                          keys={"domain": DOMAIN})


def single_via(message: str) -> bool:
    vias = [line for line in message.split("\r\n") if line.lower().startswith(("via:", "v:"))]
    return len(vias) == 1 and "," not in vias[0]


# -- registration ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lib", ["jssip", "sipjs"])
def test_register_over_wss_and_unregister(web: WebNode, tmp_path: Path, lib: str) -> None:
    user = f"reg{lib}"
    with web.client(lib, user) as c:
        registered = c.wait("registered", 15)
        if lib == "jssip":
            assert registered["status"] == 200
        register = sip_messages(c.wire("out"), "REGISTER ")[0]
        assert ".invalid" in header(register, "Contact")[0] and header(register, "Via")[0].startswith("SIP/2.0/WSS ")
        ok = sip_messages(c.wire("in"), "SIP/2.0 200")[0]
        assert single_via(ok) and re.search(r"expires=\d+", header(ok, "Contact")[0])
        c.command("unregister")
        c.wait("unregistered", 10)
        # after un-REGISTER nobody is there: 404 at once
        started = time.monotonic()
        Sipp(tmp_path, "udp").run("uac_expect", web.node.address, user=user,
                                  keys={"domain": DOMAIN, "expect_code": 404}).assert_ok()
        assert time.monotonic() - started < 5


# -- browser <-> browser -----------------------------------------------------------------------------

def test_jssip_and_sipjs_call_each_other_both_ways(web: WebNode) -> None:
    with web.client("jssip", "alice") as alice, web.client("sipjs", "bob") as bob:
        alice.wait("registered", 15)
        bob.wait("registered", 15)

        # JsSIP calls SIP.js; the callee hangs up
        alice.command("call", target=f"sip:bob@{DOMAIN}")
        bob.wait("incoming", 10)
        alice.wait("confirmed", 10)
        bob.wait("ack_received", 10)
        bob.command("hangup")
        alice.wait("ended", 10, where=lambda e: e.get("originator") == "remote")
        bob.wait("ended", 10)

        # SIP.js calls JsSIP; the callee hangs up
        bob.command("call", target=f"sip:alice@{DOMAIN}")
        alice.wait("incoming", 10)
        bob.wait("confirmed", 10)
        alice.wait("confirmed", 10)
        alice.command("hangup")
        bob.wait("bye_received", 10)
        alice.wait("ended", 10, where=lambda e: e.get("originator") == "local")

        # each BYE was answered, the 200 finding its way back too
        def bye_ok(e: dict) -> bool:
            m = e.get("text", "")
            return e.get("dir") == "in" and m.startswith("SIP/2.0 200 ") and header(m, "CSeq")[0].endswith(" BYE")
        alice.wait("wire", 5, where=bye_ok, after=0)
        bob.wait("wire", 5, where=bye_ok, after=0)

        a_in, b_in = alice.wire("in"), bob.wire("in")
        # the callee saw two Record-Route entries, each naming one browser's connection
        invite = sip_messages(b_in, "INVITE ")[0]
        rr = ", ".join(header(invite, "Record-Route")).split(", ")
        assert len(rr) == 2 and all(";transport=ws" in r and ";ob" in r and "@127.0.0.1:" in r for r in rr), rr
        assert rr[0] != rr[1]
        # in-dialog requests arrived over the right WebSocket, in both calls
        assert sip_messages(b_in, "ACK ") and sip_messages(a_in, "BYE ")  # call 1: ACK to bob, bob's BYE
        assert sip_messages(a_in, "ACK ") and sip_messages(b_in, "BYE ")  # call 2
        # every response a browser got carries its own Via only (JsSIP drops any other)
        responses = [m for m in a_in + b_in if m.startswith("SIP/2.0 ")]
        assert responses and all(single_via(m) for m in responses)


# -- browser <-> SIP phone on UDP --------------------------------------------------------------------

@pytest.mark.parametrize("lib", ["jssip", "sipjs"])
def test_browser_calls_a_udp_phone(web: WebNode, tmp_path: Path, lib: str) -> None:
    phone_user = f"desk{lib}"
    phone = udp_phone(web, tmp_path, phone_user)
    try:
        with web.client(lib, f"caller{lib}") as browser:
            browser.wait("registered", 15)
            browser.command("call", target=f"sip:{phone_user}@{DOMAIN}")
            browser.wait("confirmed", 10)
            phone.wait_for_message(r"^ACK ", timeout=10)
            browser.command("hangup")
            phone.wait_for_message(r"^BYE ", timeout=10)
            browser.wait("ended", 10)
            ok_for_bye = [m for m in sip_messages(browser.wire("in"), "SIP/2.0 200") if "CSeq:" in m and " BYE" in
                          header(m, "CSeq")[0]]
            assert ok_for_bye, browser.describe()
    finally:
        result = phone.stop()
    got = [m for m in result.messages if m.direction == "received"]
    invite = next(m for m in got if m.first_line.startswith("INVITE "))
    rr = ", ".join(invite.header("Record-Route")).split(", ")
    # double Record-Route: the UDP entry facing the phone, then the WSS entry (flow token, transport=ws)
    assert len(rr) == 2, rr
    assert ";transport=" not in rr[0] and "@" not in rr[0]
    assert re.match(r"<sip:[A-Za-z0-9_-]+@127\.0\.0\.1:\d+;transport=ws;lr;ob>", rr[1]), rr
    names = [m.first_line.split(" ")[0] for m in got]
    assert "ACK" in names and "BYE" in names


@pytest.mark.parametrize("lib", ["jssip", "sipjs"])
def test_udp_phone_calls_a_browser(web: WebNode, tmp_path: Path, lib: str) -> None:
    user = f"callee{lib}"
    with web.client(lib, user) as browser:
        browser.wait("registered", 15)
        result = Sipp(tmp_path, "udp").run("uac_call", web.node.address, user=user, duration_ms=300,
                                           keys={"domain": DOMAIN})
        assert result.ok, result.describe() + "\n" + browser.describe()
        browser.wait("incoming", 5)
        browser.wait("ended", 10)
        b_in = browser.wire("in")
    # the ACK and the BYE from the UDP side came down this browser's WebSocket, addressed to its Contact
    ack, bye = sip_messages(b_in, "ACK ")[0], sip_messages(b_in, "BYE ")[0]
    assert ".invalid" in ack.split(" ")[1] and ".invalid" in bye.split(" ")[1]
    assert header(bye, "Route") == []  # both of our entries popped
    routes = result.sent()[2].header("Route")  # the phone's BYE: through both of our entries
    assert len(", ".join(routes).split(", ")) == 2


# -- gone browsers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("lib", ["jssip", "sipjs"])
def test_a_closed_websocket_takes_its_bindings_with_it(web: WebNode, tmp_path: Path, lib: str) -> None:
    user = f"gone{lib}"
    browser = web.client(lib, user)
    try:
        browser.wait("registered", 15)
        browser.kill()  # the tab is gone: the kernel closes the connection, no un-REGISTER
    finally:
        browser.stop()
    time.sleep(0.3)
    started = time.monotonic()
    Sipp(tmp_path, "udp").run("uac_expect", web.node.address, user=user,
                              keys={"domain": DOMAIN, "expect_code": 404}).assert_ok()
    assert time.monotonic() - started < 5  # a final answer at once, not a 32 s INVITE timeout


class RawUdpUA:
    """A UDP caller written by hand, for the one thing SIPp's scenarios cannot do: send the BYE of a
    dialog after the callee's WebSocket died and look at the answer."""

    def __init__(self, node: EdgeproxyNode) -> None:
        self.node = node
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def send(self, text: str) -> None:
        self.sock.sendto(text.encode(), (self.node.host, self.node.port))

    def final(self, method: str) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = self.sock.recv(65535).decode("utf-8", "replace")
            if data.startswith("SIP/2.0 ") and not data.startswith("SIP/2.0 1") and f" {method}\r\n" in data:
                return data
        raise AssertionError(f"no final response to {method}")

    def close(self) -> None:
        self.sock.close()


def test_in_dialog_request_to_a_browser_whose_websocket_closed_gets_430(web: WebNode) -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    ua = RawUdpUA(web.node)
    browser = web.client("jssip", "flowfail")
    try:
        browser.wait("registered", 15)
        call_id = f"flow430-{ua.port}"
        common = (f"From: <sip:raw@{DOMAIN}>;tag=raw1\r\nCall-ID: {call_id}\r\nMax-Forwards: 70\r\n")
        ua.send(f"INVITE sip:flowfail@{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOOPBACK}:{ua.port};branch=z9hG4bK-f430-1;rport\r\n{common}"
                f"To: <sip:flowfail@{DOMAIN}>\r\nCSeq: 1 INVITE\r\nContact: <sip:raw@{LOOPBACK}:{ua.port}>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        ok = ua.final("INVITE")
        assert ok.startswith("SIP/2.0 200 "), ok
        to = re.search(r"^To: (.*)\r$", ok, re.M | re.I).group(1)
        contact = re.search(r"<([^>]+)>", re.search(r"^(?:Contact|m): (.*)\r$", ok, re.M | re.I).group(1)).group(1)
        rr = [v.strip() for line in re.findall(r"^Record-Route: (.*)\r$", ok, re.M | re.I) for v in line.split(",")]
        route = ", ".join(reversed(rr))  # the caller's route set (§12.1.2)
        ua.send(f"ACK {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{ua.port};branch=z9hG4bK-f430-2;rport\r\n"
                f"Route: {route}\r\n{common}To: {to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
        browser.wait("confirmed", 10)
        browser.kill()
        time.sleep(0.5)
        ua.send(f"BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{ua.port};branch=z9hG4bK-f430-3;rport\r\n"
                f"Route: {route}\r\n{common}To: {to}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
        final = ua.final("BYE")
    finally:
        browser.stop()
        ua.close()
    assert final.startswith("SIP/2.0 430 "), final  # RFC 5626 §5.3: the flow the Route names is gone


# -- the WebSocket policy of the deployed node -------------------------------------------------------

def _wss_handshake(web: WebNode, protocol: str | None) -> int:
    context = ssl.create_default_context(cafile=web.ca)
    lines = ["GET / HTTP/1.1", f"Host: 127.0.0.1:{web.wss_port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    with socket.create_connection((LOOPBACK, web.wss_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = s.recv(4096)
    return int(head.split(b" ", 2)[1])


def test_websocket_refusals_then_the_next_client_works(web: WebNode) -> None:
    # no "sip" subprotocol: 400 (the stock libraries always offer it; a raw client does not)
    assert _wss_handshake(web, None) == 400
    assert _wss_handshake(web, "chat") == 400
    # a browser page from an origin not in [ws] origins: 403, the library reports the failure
    with web.client("jssip", "evil", origin="https://evil.example") as evil:
        refused = evil.wait("ws_refused", 10)
        assert refused["status"] == 403
    # an allowed origin is let in
    with web.client("jssip", "fromapp", origin=ALLOWED_ORIGIN) as app:
        app.wait("registered", 15)
        # a message larger than [ws] max_message_size closes that WebSocket with 1009 ...
        app.command("message", target=f"sip:nobody@{DOMAIN}", size=WS_MAX + 1000)
        closed = app.wait("ws_close", 10)
        assert closed["code"] == 1009
    # ... and the next legitimate client registers and is reachable
    with web.client("sipjs", "afterwards") as next_client:
        next_client.wait("registered", 15)
        assert web.node.running()
