"""Dialogs end to end (issue 13's acceptance): a real node (``twistd edgeproxy``) with the shipped
default route, JsSIP over WSS in Node and a SIPp phone standing in for FreeSWITCH over UDP, the MI
asked over HTTP as operators' tools ask it.

* the browser vanishes mid-call (its process is killed: the kernel closes the WebSocket, no BYE):
  the UDP side gets a BYE from the node within 2 s, answers it 200, and ``dlg_list`` is empty;
* a call reaching its lifetime (``[dialog] default_timeout = 5``, the shipped routes' ``B`` flag):
  both parties get a BYE;
* the browser vanishes while the call rings: the UDP side gets a CANCEL;
* ``dlg_end_dlg`` from the MI ends a call both ways;
* a BYE with the wrong tags ends nobody's call.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.mi import mi_answer
from support.phones import register_phone
from support.ports import free_port
from support.sipp_harness import LOOPBACK, Sipp, SippProcess, require_sipp
from support.webrtc_harness import WebNode, header, require_node, sip_messages, wss_node

DOMAIN = "example.test"
LIFETIME = 5


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    require_node()
    require_sipp()
    mi_port = free_port(LOOPBACK)
    config = {"registrar": {"min_expires": 30}, "mi": {"listen": f"{LOOPBACK}:{mi_port}"},
              "dialog": {"default_timeout": LIFETIME}}
    with wss_node(tmp_path_factory.mktemp("dialog"), DOMAIN, config) as web:
        web.mi_url = f"http://{LOOPBACK}:{mi_port}/mi"  # type: ignore[attr-defined]
        yield web


def mi(web: WebNode, method: str, params: Any = None) -> Any:
    return mi_answer(web.mi_url, method, params, wait=5)  # type: ignore[attr-defined]


def freeswitch(web: WebNode, tmp_path: Path, user: str, ooc: str = "uas_answer") -> SippProcess:
    """SIPp as FreeSWITCH on UDP: registered as ``user``, answering calls (``uas_answer``: 180, 200,
    then it waits for a BYE and answers it 200; ``uas_noanswer``: rings until CANCELled)."""
    return register_phone(Sipp(tmp_path / f"fs-{user}", "udp"), web.node.address, user, ooc,
                          keys={"domain": DOMAIN})


def dialogs(web: WebNode) -> list[dict[str, Any]]:
    return mi(web, "dlg_list")["result"]["Dialogs"]


def test_browser_gone_mid_call_freeswitch_gets_a_bye_within_2s(web: WebNode, tmp_path: Path) -> None:
    fs = freeswitch(web, tmp_path, "fs1")
    browser = web.client("jssip", "tab1")
    try:
        browser.wait("registered", 15)
        browser.command("call", target=f"sip:fs1@{DOMAIN}")
        browser.wait("confirmed", 10)
        fs.wait_for_message(r"^ACK ", timeout=10)
        listed = dialogs(web)
        assert len(listed) == 1 and listed[0]["state"] == 4, listed
        assert listed[0]["CALLEES"][0]["callee_contact"].startswith("sip:fs1@")
        killed = time.monotonic()
        browser.kill()  # the tab is gone: the kernel closes the WebSocket; nobody sends a BYE
        bye = fs.wait_for_message(r"^BYE ", timeout=2.0)
        assert time.monotonic() - killed < 2.0
        # built from what the node saw: the dialog's Call-ID and tags, CSeq above the INVITE's
        assert bye.header("Call-ID")[0] == listed[0]["callid"]
        assert f"tag={listed[0]['caller_tag']}" in bye.header("From")[0]
        assert f"tag={listed[0]['CALLEES'][0]['callee_tag']}" in bye.header("To")[0]
        assert int(bye.header("CSeq")[0].split()[0]) == int(listed[0]["CALLEES"][0]["caller_cseq"]) + 1
        deadline = time.monotonic() + 3
        while dialogs(web) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dialogs(web) == []
    finally:
        browser.stop()
        result = fs.stop()
    sent = [m for m in result.messages if m.direction == "sent"]
    assert any(m.first_line.startswith("SIP/2.0 200") and "BYE" in m.header("CSeq")[0] for m in sent)


def test_lifetime_ends_the_call_with_a_bye_to_both_sides(web: WebNode, tmp_path: Path) -> None:
    fs = freeswitch(web, tmp_path, "fs2")
    try:
        with web.client("jssip", "tab2") as browser:
            browser.wait("registered", 15)
            browser.command("call", target=f"sip:fs2@{DOMAIN}")
            browser.wait("confirmed", 10)
            confirmed = time.monotonic()
            fs.wait_for_message(r"^BYE ", timeout=LIFETIME + 3)
            ended = browser.wait("ended", 5)
            elapsed = time.monotonic() - confirmed
            assert LIFETIME - 1 <= elapsed <= LIFETIME + 3, elapsed
            assert ended["originator"] == "remote", ended
            bye = sip_messages(browser.wire("in"), "BYE ")[0]
            assert ".invalid" in bye.split(" ")[1]  # to the browser's Contact, down its WebSocket
            assert header(bye, "Route") == []
        assert dialogs(web) == []
        stats = mi(web, "get_statistics", [["dialog:"]])["result"]
        assert stats["dialog:expired_dialogs"] >= 1 and stats["dialog:active_dialogs"] == 0
    finally:
        fs.stop()


def test_mi_dlg_end_dlg_and_a_spoofed_bye(web: WebNode, tmp_path: Path) -> None:
    fs = freeswitch(web, tmp_path, "fs3")
    try:
        with web.client("jssip", "tab3") as browser:
            browser.wait("registered", 15)
            browser.command("call", target=f"sip:fs3@{DOMAIN}")
            browser.wait("confirmed", 10)
            (dlg,) = dialogs(web)
            # a BYE with the right Call-ID but the wrong tags, from elsewhere: answered as today, it ends nothing
            forged = (f"BYE sip:fs3@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:9;branch=z9hG4bKspoof\r\n"
                      f"Max-Forwards: 70\r\nFrom: <sip:x@{DOMAIN}>;tag=evil\r\nTo: <sip:y@{DOMAIN}>;tag=worse\r\n"
                      f"Call-ID: {dlg['callid']}\r\nCSeq: 99 BYE\r\nContent-Length: 0\r\n\r\n")
            host, port = web.node.address.rsplit(":", 1)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((LOOPBACK, 0))
                s.sendto(forged.encode(), (host, int(port)))
            time.sleep(0.5)
            assert [d["ID"] for d in dialogs(web)] == [dlg["ID"]]
            answer = mi(web, "dlg_end_dlg", [dlg["ID"]])
            assert answer.get("result") == "OK", answer
            fs.wait_for_message(r"^BYE ", timeout=3)
            browser.wait("ended", 5)
        assert dialogs(web) == []
        assert mi(web, "dlg_end_dlg", ["no-such-call"])["error"]["code"] == 404
    finally:
        fs.stop()


def test_browser_gone_while_ringing_freeswitch_gets_a_cancel(web: WebNode, tmp_path: Path) -> None:
    fs = freeswitch(web, tmp_path, "fs4", ooc="uas_noanswer")
    browser = web.client("jssip", "tab4")
    try:
        browser.wait("registered", 15)
        browser.command("call", target=f"sip:fs4@{DOMAIN}")
        browser.wait("progress", 10)
        (dlg,) = dialogs(web)
        assert dlg["state"] == 2  # early
        browser.kill()
        fs.wait_for_message(r"^CANCEL ", timeout=2.0)
        fs.wait_for_message(r"^ACK ", timeout=5)  # the node ACKs the 487
        assert dialogs(web) == []
    finally:
        browser.stop()
        fs.stop()
