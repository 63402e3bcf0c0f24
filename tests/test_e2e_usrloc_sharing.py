"""Acceptance, end to end: full sharing of the location table between two real nodes (issue 12,
OpenSIPS ``full-sharing-cluster``).

X (127.0.0.11) and Y (127.0.0.12) run ``twistd edgeproxy`` with ``[usrloc] working_mode_preset =
"full-sharing-cluster"`` and a two-node ``[cluster]`` (real AMP links). Phones on 127.0.0.1:

* 1,000 users register on X (raw REGISTER loader), three of them to a SIPp UAS: Y holds every one
  of them (``get_statistics usrloc:`` through the ``opensips`` MI client);
* one AoR registered on both nodes at once, with one Call-ID and CSeqs 1 and 2: both nodes end with
  the CSeq 2 contact (``ul_show_contact``);
* a browser registers on X over a WebSocket: Y holds it too, tagged with X's sip_addr (only X can
  reach it); a SIPp call through Y for it is relayed to X, which sends it down the WebSocket: the
  browser's 486 comes back to SIPp through both nodes;
* X is killed (``kill -9``): a SIPp call through Y to a user who registered on X completes, and a
  call for X's browser gets its final response (404) at once instead of hanging on timer B;
* while X is down, a user unregisters on Y and another registers there; X restarts, pulls Y's table
  (``usrloc: synced ...`` in its log) and holds exactly what Y holds -- the unregistered user is not
  revived, the new one is there -- and a call through X completes without any REGISTER to it.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from support.polling import wait_until
from support.ports import free_port
from support.registrations import Registration, register_many
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp
from support.ws_client import ws_frame, ws_read, ws_upgrade

try:
    from opensips.mi import OpenSIPSMI, OpenSIPSMIException
except ImportError:  # pragma: no cover - installed by .[test]; under CI a missing client fails
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the opensips package is not installed (pip install '.[test]')", allow_module_level=True)

X_IP, Y_IP = "127.0.0.11", "127.0.0.12"
USERS = 1000
CALLEES = ("callee0", "callee1")


def contacts(mi: Any) -> int:
    return mi.execute("get_statistics", {"statistics": ["usrloc:location-contacts"]})["usrloc:location-contacts"]


def shown(mi: Any, aor: str) -> list[tuple[str, str, int]]:
    try:
        found = mi.execute("ul_show_contact", ["location", aor])
    except OpenSIPSMIException:
        return []
    return sorted((c["Contact"], c["Callid"], c["Cseq"]) for c in found["Contacts"])


def ws_register(host: str, port: int, user: str) -> socket.socket:
    """A browser-like client: a WebSocket (``sip`` subprotocol) to ``host:port`` and a REGISTER of an
    ``.invalid`` contact over it (RFC 7118); the open socket is returned (closing it ends the flow)."""
    sock = socket.create_connection((host, port), timeout=5)
    head = ws_upgrade(sock, host, port)
    assert head.startswith(b"HTTP/1.1 101"), head
    text = (f"REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws{user};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag=ws1\r\nTo: <sip:{user}@{host}>\r\n"
            f"Call-ID: ws-{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@df7jal23ls0d.invalid;transport=ws>\r\n"
            f"Expires: 600\r\nContent-Length: 0\r\n\r\n").encode()
    ws_send(sock, text)
    data = ws_recv(sock)
    assert data.startswith("SIP/2.0 200"), data
    return sock


def ws_send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(ws_frame(data))


def ws_recv(sock: socket.socket) -> str:
    """One frame from the server, as text."""
    return ws_read(sock)[1].decode()


def ws_answer_busy(sock: socket.socket) -> str:
    """Wait for an INVITE on the browser's WebSocket and answer it 486 (its Vias, From, To with a
    tag, Call-ID, CSeq: RFC 3261 §8.2.6.2); the INVITE's text is returned."""
    sock.settimeout(15)
    invite = ws_recv(sock)
    assert invite.startswith("INVITE "), invite
    keep = [line for line in invite.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            if line.split(":", 1)[0].strip().lower() in ("via", "v", "from", "f", "call-id", "i", "cseq")]
    to = next(line for line in invite.split("\r\n") if line.split(":", 1)[0].strip().lower() in ("to", "t"))
    ws_send(sock, ("SIP/2.0 486 Busy Here\r\n" + "\r\n".join(keep) + f"\r\n{to};tag=busy1\r\n"
                   "Content-Length: 0\r\n\r\n").encode())
    return invite


def test_full_sharing_pair(tmp_path: Path) -> None:
    require_sipp()
    ports = {ip: (free_port(ip), free_port(ip), free_port(ip)) for ip in (X_IP, Y_IP)}  # sip, bin, mi
    rows = [{"cluster_id": 1, "node_id": n, "url": f"bin:{ip}:{ports[ip][1]}", "sip_addr": f"{ip}:{ports[ip][0]}",
             "flags": "seed", "no_ping_retries": 2} for n, ip in ((1, X_IP), (2, Y_IP))]

    def config(node_id: int, ip: str) -> dict[str, Any]:
        return {"usrloc": {"working_mode_preset": "full-sharing-cluster"},
                "cluster": {"my_node_id": node_id, "ping_interval": 0.3, "ping_timeout": 0.2,
                            "seed_fallback_interval": 0.5, "nodes": rows},
                "mi": {"listen": f"{ip}:{ports[ip][2]}"}}

    mi_x = OpenSIPSMI(conn="http", url=f"http://{X_IP}:{ports[X_IP][2]}/mi")
    mi_y = OpenSIPSMI(conn="http", url=f"http://{Y_IP}:{ports[Y_IP][2]}/mi")
    x_addr, y_addr = (X_IP, ports[X_IP][0]), (Y_IP, ports[Y_IP][0])
    uas = Sipp(tmp_path / "uas").start("uas_answer", user="callee", calls=len(CALLEES), timeout=120)
    try:
        with edgeproxy_node(tmp_path / "y", config=config(2, Y_IP), transports=("udp",), host=Y_IP,
                            port=ports[Y_IP][0]) as y:
            with edgeproxy_node(tmp_path / "x", config=config(1, X_IP), transports=("udp", "ws"), host=X_IP,
                                port=ports[X_IP][0]) as x:
                wait_until("the cluster link", lambda: "node 2 is UP" in x.log() and "node 1 is UP" in y.log(),
                           timeout=30)
                regs = [Registration(f"u{i:04d}", f"sip:u{i:04d}@{LOOPBACK}:9") for i in range(USERS - len(CALLEES))]
                regs += [Registration(c, f"sip:{c}@{LOOPBACK}:{uas.port}") for c in CALLEES]
                assert register_many(x_addr, regs).ok == USERS
                wait_until("Y to hold every contact registered on X", lambda: contacts(mi_y) == USERS, timeout=30)
                assert contacts(mi_x) == USERS

                # the same AoR on both nodes at once: the higher CSeq of the one Call-ID wins on both
                on_x = Registration("conc", f"sip:conc@{LOOPBACK}:9", cseq=1, call_id="conc-1@127.0.0.1")
                on_y = Registration("conc", f"sip:conc@{LOOPBACK}:9", cseq=2, call_id="conc-1@127.0.0.1")
                with ThreadPoolExecutor(2) as pool:  # both at once
                    at_x = pool.submit(register_many, x_addr, [on_x])
                    at_y = pool.submit(register_many, y_addr, [on_y])
                    # CSeq 1 is refused (400) when X already holds Y's CSeq 2: RFC 3261 §10.3 step 7
                    assert set(at_x.result().statuses) <= {200, 400} and at_y.result().ok == 1
                wait_until("the same contact on both",
                           lambda: shown(mi_x, "conc") == shown(mi_y, "conc") != [], timeout=30)
                assert [c[2] for c in shown(mi_x, "conc")] == [2]
                # a browser on X: reachable only over its WebSocket; Y holds it as X's, and relays to X
                browser = ws_register(X_IP, ports[X_IP][0], "browser")
                wait_until("Y to hold X's browser",
                           lambda: shown(mi_y, "browser") == shown(mi_x, "browser") != [], timeout=30)
                with ThreadPoolExecutor(1) as pool:
                    answered = pool.submit(ws_answer_busy, browser)
                    Sipp(tmp_path / "call-browser-via-x").run(
                        "uac_expect", f"{Y_IP}:{ports[Y_IP][0]}", user="browser", timeout=15,
                        keys={"domain": Y_IP, "expect_code": 486}).assert_ok()
                    invite = answered.result(timeout=15)
                # both nodes stayed on the path (RFC 3261 §16.6 step 4): the ACK and BYE go through them
                record_routes = [line for line in invite.split("\r\n") if line.lower().startswith("record-route")]
                assert any(X_IP in line for line in record_routes) and any(Y_IP in line for line in record_routes), \
                    record_routes
                x.kill()
                browser.close()
                wait_until("Y to see X down", lambda: "node 1 is DOWN" in y.log(), timeout=30)

            # X is dead: Y serves X's users; a call for X's browser gets its final answer at once
            started = time.monotonic()
            Sipp(tmp_path / "call-browser").run("uac_expect", f"{Y_IP}:{ports[Y_IP][0]}", user="browser",
                                                timeout=15, keys={"domain": Y_IP, "expect_code": 404}).assert_ok()
            print(f"\ncall for X's browser through Y: 404 after {time.monotonic() - started:.2f} s")
            Sipp(tmp_path / "call-y").run("uac_call", f"{Y_IP}:{ports[Y_IP][0]}", user=CALLEES[0], duration_ms=100,
                                          timeout=15, keys={"domain": Y_IP}).assert_ok()
            assert register_many(y_addr, [Registration("u0000", f"sip:u0000@{LOOPBACK}:9", expires=0)]).ok == 1
            assert register_many(y_addr, [Registration("newcomer", f"sip:newcomer@{LOOPBACK}:9")]).ok == 1

            with edgeproxy_node(tmp_path / "x2", config=config(1, X_IP), transports=("udp",), host=X_IP,
                                port=ports[X_IP][0]) as x:
                wait_until("X's sync from Y", lambda: "usrloc: synced" in x.log(), timeout=30)
                wait_until("X to hold what Y holds", lambda: contacts(mi_x) == contacts(mi_y), timeout=30)
                assert contacts(mi_x) == USERS + 1  # u0000 gone, conc and newcomer there
                assert shown(mi_x, "u0000") == [] and shown(mi_x, "newcomer") == shown(mi_y, "newcomer") != []
                synced = next(line for line in x.log().splitlines() if "usrloc: synced" in line)
                print("\n" + synced.split("] ", 1)[1])
                Sipp(tmp_path / "call-x").run("uac_call", f"{X_IP}:{ports[X_IP][0]}", user=CALLEES[1],
                                              duration_ms=100, timeout=15, keys={"domain": X_IP}).assert_ok()
    finally:
        uas.stop()
