"""Acceptance, end to end: full sharing of the location table between two real nodes (issue 12,
OpenSIPS ``full-sharing-cluster``), at the issue's size.

X (127.0.0.11) and Y (127.0.0.12) run ``twistd edgeproxy`` with ``[usrloc] working_mode_preset =
"full-sharing-cluster"`` and a two-node ``[cluster]`` (real AMP links). Phones on 127.0.0.1:

* 10,000 users register on X (raw REGISTER loader, ~1,000 a second), every Contact at one SIPp UAS:
  Y holds every one of them (``get_statistics usrloc:`` through the ``opensips`` MI client);
* one AoR registered on both nodes at once, with one Call-ID and CSeqs 1 and 2: both nodes end with
  the CSeq 2 contact (``ul_show_contact``);
* a browser registers on X over a WebSocket, and a phone behind NAT over TCP: Y holds both, tagged
  with X's sip_addr (only X can reach them); a SIPp call through Y for the browser is relayed to X,
  which sends it down the WebSocket: the browser's 486 comes back to SIPp through both nodes;
* X is killed (``kill -9``): FreeSWITCH (a SIPp UAC on 127.0.0.31) calls a sample of X's 10,000
  users through Y, and every call completes; calls for X's browser and TCP phone get their final
  response (404) at once instead of hanging on timer B;
* while X is down, a user unregisters on Y and another registers there; X restarts, pulls Y's table
  once (``usrloc: synced ...`` in its log; Y does not pull X's) and holds exactly what Y holds -- the
  unregistered user is not revived, the new one is there, its own connection-bound contacts are
  gone everywhere -- and calls through X complete without any REGISTER to it.
"""

from __future__ import annotations

import os
import random
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

X_IP, Y_IP, FS_IP = "127.0.0.11", "127.0.0.12", "127.0.0.31"
USERS = 10_000
SAMPLE = 120  # calls through Y after X died, spread over the 10,000
AFTER_RESTART = 10  # calls through X once it synced again


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


def tcp_register(host: str, port: int, user: str) -> socket.socket:
    """A phone behind NAT over TCP (its Via names another address than the connection's source:
    ``nat_uac_test``'s ``diff-ip-src-via``): reachable only over this connection, which is returned
    open."""
    sock = socket.create_connection((host, port), timeout=5, source_address=(LOOPBACK, 0))
    sock.sendall((f"REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.99:5060;branch=z9hG4bKtcp{user};rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag=tcp1\r\nTo: <sip:{user}@{host}>\r\n"
                  f"Call-ID: tcp-{user}\r\nCSeq: 1 REGISTER\r\n"
                  f"Contact: <sip:{user}@127.0.0.99:5060;transport=tcp>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")
                 .encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"SIP/2.0 200"), answer
    return sock


def calls(workdir: Path, target: str, users: list[str], domain: str) -> None:
    """FreeSWITCH calling ``users`` through the node at ``target``: one SIPp UAC per call from
    127.0.0.31, eight at a time; every call must complete (INVITE, 200, ACK, BYE)."""
    def one(user: str) -> None:
        Sipp(workdir / user, local_ip=FS_IP).run("uac_call", target, user=user, duration_ms=50, timeout=20,
                                                 keys={"domain": domain}).assert_ok()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, users))


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
    ports = {ip: tuple(free_port(ip) for _ in range(4)) for ip in (X_IP, Y_IP)}  # sip, bin, mi, tcp
    rows = [{"cluster_id": 1, "node_id": n, "url": f"bin:{ip}:{ports[ip][1]}", "sip_addr": f"{ip}:{ports[ip][0]}",
             "flags": "seed", "no_ping_retries": 2} for n, ip in ((1, X_IP), (2, Y_IP))]

    def config(node_id: int, ip: str) -> dict[str, Any]:
        sip = ports[ip][0]
        return {"node": {"listen": [f"udp:{ip}:{sip}", f"ws:{ip}:{sip}", f"tcp:{ip}:{ports[ip][3]}"],
                         "log_level": "info"},
                "usrloc": {"working_mode_preset": "full-sharing-cluster"},
                "cluster": {"my_node_id": node_id, "ping_interval": 0.3, "ping_timeout": 0.5,
                            "seed_fallback_interval": 1.0, "nodes": rows},
                "mi": {"listen": f"{ip}:{ports[ip][2]}"}}

    mi_x = OpenSIPSMI(conn="http", url=f"http://{X_IP}:{ports[X_IP][2]}/mi")
    mi_y = OpenSIPSMI(conn="http", url=f"http://{Y_IP}:{ports[Y_IP][2]}/mi")
    x_addr, y_addr = (X_IP, ports[X_IP][0]), (Y_IP, ports[Y_IP][0])
    y_target, x_target = f"{Y_IP}:{ports[Y_IP][0]}", f"{X_IP}:{ports[X_IP][0]}"
    sample = sorted(random.Random(12).sample(range(1, USERS), SAMPLE + AFTER_RESTART))
    users = [f"u{i:05d}" for i in sample]
    uas = Sipp(tmp_path / "uas").start("uas_answer", user="callee", calls=len(users), timeout=300)
    try:
        with edgeproxy_node(tmp_path / "y", config=config(2, Y_IP), transports=("udp",), host=Y_IP,
                            port=ports[Y_IP][0]) as y:
            # Y alone: after seed_fallback_interval its (empty) table is the cluster's; it will not pull X's
            wait_until("Y's seed fallback", lambda: "seed fallback" in y.log(), timeout=30)
            with edgeproxy_node(tmp_path / "x", config=config(1, X_IP), transports=("udp",), host=X_IP,
                                port=ports[X_IP][0]) as x:
                wait_until("the cluster link", lambda: "node 2 is UP" in x.log() and "node 1 is UP" in y.log(),
                           timeout=30)
                regs = [Registration(f"u{i:05d}", f"sip:u{i:05d}@{LOOPBACK}:{uas.port}") for i in range(USERS)]
                started = time.monotonic()
                assert register_many(x_addr, regs, window=100, timeout=120).ok == USERS
                wait_until("Y to hold every contact registered on X", lambda: contacts(mi_y) == USERS, timeout=60)
                print(f"\n{USERS} REGISTERs on X, all of them on Y after {time.monotonic() - started:.1f} s")
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
                # a browser and a TCP phone behind NAT on X: reachable only over their connections to X;
                # Y holds them as X's, and relays to X
                browser = ws_register(X_IP, ports[X_IP][0], "browser")
                phone = tcp_register(X_IP, ports[X_IP][3], "tcpphone")
                for user in ("browser", "tcpphone"):
                    wait_until(f"Y to hold X's {user}",
                               lambda user=user: shown(mi_y, user) == shown(mi_x, user) != [], timeout=30)
                with ThreadPoolExecutor(1) as pool:
                    answered = pool.submit(ws_answer_busy, browser)
                    Sipp(tmp_path / "call-browser-via-x").run(
                        "uac_expect", y_target, user="browser", timeout=15,
                        keys={"domain": Y_IP, "expect_code": 486}).assert_ok()
                    invite = answered.result(timeout=15)
                # both nodes stayed on the path (RFC 3261 §16.6 step 4): the ACK and BYE go through them
                record_routes = [line for line in invite.split("\r\n") if line.lower().startswith("record-route")]
                assert any(X_IP in line for line in record_routes) and any(Y_IP in line for line in record_routes), \
                    record_routes
                downs = y.log().count("node 1 is DOWN")  # a loaded link may have flapped already
                x.kill()
                browser.close()
                phone.close()
                wait_until("Y to see X down", lambda: y.log().count("node 1 is DOWN") > downs, timeout=30)

            # X is dead: Y serves X's users; calls for X's browser and TCP phone get their final answer at once
            for user in ("browser", "tcpphone"):
                started = time.monotonic()
                Sipp(tmp_path / f"call-{user}").run("uac_expect", y_target, user=user, timeout=15,
                                                    keys={"domain": Y_IP, "expect_code": 404}).assert_ok()
                took = time.monotonic() - started
                print(f"call for X's {user} through Y: 404 after {took:.2f} s")
                assert took < 5, took  # timer B would be 32 s
            started = time.monotonic()
            calls(tmp_path / "calls-y", y_target, users[:SAMPLE], Y_IP)
            print(f"{SAMPLE} calls through Y to users registered on X: all completed in "
                  f"{time.monotonic() - started:.1f} s")
            assert register_many(y_addr, [Registration("u00000", regs[0].contact, expires=0)]).ok == 1
            assert register_many(y_addr, [Registration("newcomer", f"sip:newcomer@{LOOPBACK}:9")]).ok == 1

            with edgeproxy_node(tmp_path / "x2", config=config(1, X_IP), transports=("udp",), host=X_IP,
                                port=ports[X_IP][0]) as x:
                wait_until("X's sync from Y", lambda: "usrloc: synced" in x.log(), timeout=60)
                wait_until("X to hold what Y holds", lambda: contacts(mi_x) == contacts(mi_y), timeout=30)
                assert contacts(mi_x) == USERS + 1  # u00000 gone, conc and newcomer there
                assert shown(mi_x, "u00000") == [] and shown(mi_x, "newcomer") == shown(mi_y, "newcomer") != []
                assert shown(mi_y, "browser") == shown(mi_y, "tcpphone") == []  # their connections died with X
                synced = next(line for line in x.log().splitlines() if "usrloc: synced" in line)
                print(synced.split("] ", 1)[1])
                # one pull each time, by the node that (re)started: Y, synced all along, never pulls from X
                assert x.log().count("for its location table") >= 1  # again only if Y went down meanwhile
                assert y.log().count("for its location table") == 0 and "seed fallback" not in x.log()
                calls(tmp_path / "calls-x", x_target, users[SAMPLE:], X_IP)
    finally:
        uas.stop()
