"""End to end over TLS with third-party SIP clients: ``twistd edgeproxy`` with a ``tls`` listener and
the test CA, baresip (Debian's, libre/OpenSSL) as a TLS phone, sipsak (GnuTLS) as a TLS client,
SIPp as the phones on UDP.

* baresip registers over TLS, calls a UDP phone and is called by one: INVITE/180/200/ACK/BYE cross
  transports through a double Record-Route whose TLS entry names baresip's connection (RFC 5626), and
  requests for baresip go down the connection it registered over (it is never dialled).
* baresip's connection cut mid-call: the UDP phone gets a BYE from the node (dialogs, issue 13).
* sipsak REGISTERs over TLS 1.2 and sends a MESSAGE through the node to a UDP phone.
* A listener requiring client certificates lets baresip in with a certificate of the trusted CA and
  refuses it with an untrusted one or none.
* Outbound TLS (a route's ``set_dst`` to a TLS peer) verifies the peer's certificate against the name
  it was reached by: a peer whose certificate names something else is refused and the call gets 503;
  the same route to a peer with a matching certificate reaches it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import wave
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.phones import register_phone
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, SippProcess, edgeproxy_node, free_port, require_sipp
from support.tls_ca import Issued, TestCA

DOMAIN = "example.test"


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (Debian/Ubuntu: apt-get install -y {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def _free_pair() -> int:
    """A port P with P and P+1 free: baresip listens on sip_listen's port (UDP, TCP) and TLS on P+1."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


class Baresip:
    """One baresip 1.0 user agent with an account over TLS to ``proxy`` (its outbound proxy), driven
    through its ``ctrl_tcp`` module: commands and events are netstring-framed JSON. It answers calls
    by itself (``answermode=auto``), sends silence from a WAV file, plays nothing, binds to the
    loopback interface only and quits by itself after ``lifetime`` seconds."""

    def __init__(self, workdir: Path, user: str, proxy: str, ca: str, *, client_cert: str | None = None,
                 lifetime: int = 90) -> None:
        binary = require_tool("baresip", "baresip-core")
        self.user = user
        self.dir = workdir / f"baresip-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        wav = self.dir / "silence.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 8000 * 5)
        sip_port, self.ctrl_port = _free_pair(), free_port()
        lines = [
            "poll_method\tepoll",
            f"sip_listen\t{LOOPBACK}:{sip_port}",
            f"sip_cafile\t{ca}",
            f"audio_source\taufile,{wav}",
            "audio_player\tnone",
            "audio_alert\tnone",
            f"net_interface\t{LOOPBACK}",
            "module_path\t/usr/lib/baresip/modules",
            "module\tg711.so",
            "module\taufile.so",
            "module\tctrl_tcp.so",
            f"ctrl_tcp_listen\t{LOOPBACK}:{self.ctrl_port}",
            "module_app\taccount.so",
            "module_app\tmenu.so",  # the commands (dial, hangup, reginfo) ctrl_tcp runs
        ]
        if client_cert is not None:
            lines.append(f"sip_certificate\t{client_cert}")
        (self.dir / "config").write_text("\n".join(lines) + "\n")
        (self.dir / "accounts").write_text(
            f"<sip:{user}@{DOMAIN};transport=tls>;outbound=\"sip:{proxy};transport=tls\";regint=300;"
            "answermode=auto;audio_codecs=PCMU\n")
        self.log_path = self.dir / "baresip.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([binary, "-f", str(self.dir), "-t", str(lifetime)], cwd=self.dir,
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.events: list[dict[str, Any]] = []
        self._queue: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self._seen = 0
        self.sock = self._connect()
        self._token = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while True:
            try:
                return socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1)
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"baresip ctrl_tcp did not come up:\n{self.log()}")
                time.sleep(0.05)

    def _read(self) -> None:
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._queue.put(None)
                return
            buf += data
            while b":" in buf:
                length, rest = buf.split(b":", 1)
                size = int(length)
                if len(rest) < size + 1:
                    break
                self._queue.put(json.loads(rest[:size]))
                buf = rest[size + 1:]

    def wait(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of ``type`` ``kind`` (REGISTER_OK, REGISTER_FAIL, CALL_INCOMING,
        CALL_ESTABLISHED, CALL_CLOSED, ...)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.events):
                e = self.events[self._seen]
                self._seen += 1
                if e.get("type") == kind:
                    return e
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            if item is None:
                self._queue.put(None)
                if self._seen >= len(self.events):
                    break
                continue
            self.events.append(item)
        raise AssertionError(f"baresip {self.user}: no {kind} within {timeout}s; events "
                             f"{[e.get('type') for e in self.events]}\n{self.log()}")

    def registration(self, timeout: float = 10.0) -> str:
        """``"OK"`` or ``"ERR"`` once the account's registration has an outcome (asked with the
        ``reginfo`` command: the REGISTER_OK/FAIL events may come before ctrl_tcp is connected);
        ``"PENDING"`` if it has none after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.command("reginfo")
            token = str(self._token)
            reply = self.wait_response(token, max(deadline - time.monotonic(), 0.1))
            found = re.search(r"\x1b\[3\dm(OK|ERR)\s*\x1b", reply.get("data", ""))
            if found:
                return found.group(1)
            time.sleep(0.2)
        return "PENDING"

    def wait_response(self, token: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("response") and e.get("token") == token:
                    return e
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                self._queue.put(None)
                break
            self.events.append(item)
        raise AssertionError(f"baresip {self.user}: no response to command {token}\n{self.log()}")

    def command(self, command: str, params: str = "") -> None:
        self._token += 1
        body = json.dumps({"command": command, "params": params, "token": str(self._token)}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM by PID (baresip un-registers and exits), SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.kill(self.process.pid, sig)
                self.process.wait(3)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        try:
            self.sock.close()
        except Exception:
            pass
        self._log.close()

    def __enter__(self) -> "Baresip":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextmanager
def rtp_sink(*ports: int) -> Iterator[None]:
    """Bind the RTP ports the SIPp scenarios' SDP names (6000 caller, 6002 callee), so that baresip's
    audio lands somewhere: an ICMP port-unreachable would make it end the call by itself."""
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    try:
        yield
    finally:
        for s in socks:
            s.close()


class TlsNode:
    def __init__(self, node: EdgeproxyNode, tls_port: int, ca: TestCA, workdir: Path) -> None:
        self.node = node
        self.tls_port = tls_port
        self.ca = ca
        self.workdir = workdir

    @property
    def tls_address(self) -> str:
        return f"{LOOPBACK}:{self.tls_port}"


def tls_node(workdir: Path, ca: TestCA, server: Issued, *, tls: dict | None = None, route: str | None = None,
             route_params: dict | None = None):
    port, tls_port = free_port(), free_port()
    config: dict[str, dict] = {
        "node": {"listen": [f"udp:{LOOPBACK}:{port}", f"tls:{LOOPBACK}:{tls_port}"], "domains": [DOMAIN]},
        "registrar": {"min_expires": 30},
        "tls": {"certificate": server.cert, "key": server.key, "ca": ca.cert, **(tls or {})},
    }
    if route_params:
        config["route_params"] = route_params
    return edgeproxy_node(workdir, config=config, port=port, transports=("udp",), route=route), tls_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, Issued]:
    ca = TestCA(tmp_path_factory.mktemp("tlspki"))
    return ca, ca.issue("server", dns=["localhost"], ips=[LOOPBACK])


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, pki) -> Iterator[TlsNode]:
    require_sipp()
    ca, server = pki
    workdir = tmp_path_factory.mktemp("tlsnode")
    ctx, tls_port = tls_node(workdir, ca, server)
    with ctx as node:
        yield TlsNode(node, tls_port, ca, workdir)


def udp_phone(edge: TlsNode, tmp_path: Path, user: str, ooc: str = "uas_answer") -> SippProcess:
    return register_phone(Sipp(tmp_path / f"phone-{user}", "udp"), edge.node.address, user, ooc,
                          keys={"domain": DOMAIN})


# -- baresip: a TLS phone ----------------------------------------------------------------------------

def test_baresip_over_tls_calls_a_udp_phone(edge: TlsNode, tmp_path: Path) -> None:
    phone = udp_phone(edge, tmp_path, "carol")
    try:
        with rtp_sink(6002), Baresip(tmp_path, "dave", edge.tls_address, edge.ca.cert) as dave:
            assert dave.registration() == "OK"
            dave.command("dial", f"sip:carol@{DOMAIN}")
            dave.wait("CALL_ESTABLISHED", 10)
            phone.wait_for_message(r"^ACK ", timeout=10)
            dave.command("hangup")
            dave.wait("CALL_CLOSED", 10)
            phone.wait_for_message(r"^BYE ", timeout=10)
            time.sleep(0.3)  # the phone's 200 for the BYE goes back over TLS
    finally:
        result = phone.stop()
    got = [m for m in result.messages if m.direction == "received"]
    assert [m.first_line.split(" ")[0] for m in got if m.status is None][-3:] == ["INVITE", "ACK", "BYE"]
    invite = next(m for m in got if m.first_line.startswith("INVITE "))
    rr = ", ".join(invite.header("Record-Route")).split(", ")
    # UDP entry facing the phone on top; the TLS entry names baresip's connection (RFC 5626)
    assert len(rr) == 2 and "@" not in rr[0] and ";transport=" not in rr[0], rr
    assert rr[1].endswith(f"@{edge.tls_address};transport=tls;lr;ob>"), rr
    assert invite.header("Via")[-1].startswith("SIP/2.0/TLS ")  # baresip's own Via: it came over TLS


def test_a_udp_phone_calls_baresip_over_its_tls_connection(edge: TlsNode, tmp_path: Path) -> None:
    with rtp_sink(6000), Baresip(tmp_path, "erin", edge.tls_address, edge.ca.cert) as erin:
        assert erin.registration() == "OK"
        caller = Sipp(tmp_path, "udp").run("uac_call", edge.node.address, user="erin", duration_ms=500,
                                           keys={"domain": DOMAIN})
        assert caller.ok, caller.describe() + "\n" + erin.log()
        erin.wait("CALL_ESTABLISHED", 5)  # answered by itself (answermode=auto)
        erin.wait("CALL_CLOSED", 10)  # the caller's BYE reached baresip
    sent = [m.first_line.split(" ")[0] for m in caller.sent()]
    assert sent == ["INVITE", "ACK", "BYE"]
    ok = [m for m in caller.received() if m.status == 200][0]
    rr = ", ".join(ok.header("Record-Route")).split(", ")
    assert len(rr) == 2 and rr[0].endswith(f"@{edge.tls_address};transport=tls;lr;ob>") and "@" not in rr[1]
    assert [m.status for m in caller.received()][-1] == 200  # baresip's 200 for the BYE came back


def test_tls_phone_cut_mid_call_the_udp_side_gets_a_bye(edge: TlsNode, tmp_path: Path) -> None:
    """Dialogs (issue 13): baresip's connection is cut mid-call (SIGKILL: the kernel closes it, nobody
    sends a BYE); the shipped route made the call a dialog, so the node sends the UDP phone a BYE
    within 2 s, built from what it saw (the dialog's Call-ID and tags)."""
    phone = udp_phone(edge, tmp_path, "frank")
    try:
        with rtp_sink(6002), Baresip(tmp_path, "gina", edge.tls_address, edge.ca.cert) as gina:
            assert gina.registration() == "OK"
            gina.command("dial", f"sip:frank@{DOMAIN}")
            gina.wait("CALL_ESTABLISHED", 10)
            invite = phone.wait_for_message(r"^INVITE ", timeout=5)
            phone.wait_for_message(r"^ACK ", timeout=10)
            cut = time.monotonic()
            os.kill(gina.process.pid, signal.SIGKILL)
            bye = phone.wait_for_message(r"^BYE ", timeout=2.0)
            assert time.monotonic() - cut < 2.0
            assert bye.header("Call-ID") == invite.header("Call-ID")
            assert bye.header("From")[0].split("tag=")[1] == invite.header("From")[0].split("tag=")[1]
            time.sleep(0.3)
    finally:
        result = phone.stop()
    sent = [m for m in result.messages if m.direction == "sent"]
    assert any(m.status == 200 and "BYE" in m.header("CSeq")[0] for m in sent)  # the phone answered it


# -- sipsak: a TLS client (GnuTLS, TLS 1.2) ----------------------------------------------------------

def test_sipsak_registers_over_tls_and_messages_a_udp_phone(tmp_path: Path, pki) -> None:
    """sipsak 0.9.8 reads no reply over TLS 1.3 (see test_transport_tls), hence a node capped at 1.2."""
    sipsak = require_tool("sipsak", "sipsak")
    require_sipp()
    ca, server = pki
    ctx, tls_port = tls_node(tmp_path / "node", ca, server, tls={"max_version": "1.2"})
    with ctx as node:
        edge = TlsNode(node, tls_port, ca, tmp_path)
        phone = udp_phone(edge, tmp_path, "frank", ooc="uas_message")
        try:
            def run(*args: str) -> subprocess.CompletedProcess:
                return subprocess.run([sipsak, "--transport=tls", f"--tls-ca-cert={ca.cert}", "-vv",
                                       "-p", f"localhost:{tls_port}", *args],
                                      capture_output=True, text=True, timeout=20)

            reg = run("-U", "-C", f"sip:grace@{LOOPBACK}:5099;transport=tls", "-x", "60", "-s", f"sip:grace@{DOMAIN}")
            assert reg.returncode == 0, reg.stdout + reg.stderr
            # sipsak's own MESSAGE mode (-M) crashes over TLS; its shoot mode sends a request from a file
            body = "hello over TLS"
            request = tmp_path / "message.sip"
            request.write_text(f"MESSAGE sip:frank@{DOMAIN} SIP/2.0\r\nFrom: <sip:grace@{DOMAIN}>;tag=g1\r\n"
                               f"To: <sip:frank@{DOMAIN}>\r\nCall-ID: sipsak-message-{tls_port}\r\n"
                               "CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n"
                               f"Content-Length: {len(body)}\r\n\r\n{body}")
            msg = run("-f", str(request), "-s", f"sip:frank@{DOMAIN}")
            assert msg.returncode == 0 and "200 OK" in msg.stdout, msg.stdout + msg.stderr
            message = phone.wait_for_message(r"^MESSAGE ", timeout=5)
        finally:
            phone.stop()
    assert "hello over TLS" in message.text
    vias = ", ".join(message.header("Via")).split(", ")
    assert len(vias) == 2 and vias[1].startswith("SIP/2.0/TLS ")


# -- mutual TLS ---------------------------------------------------------------------------------------

def test_a_listener_requiring_client_certificates_refuses_untrusted_ones(tmp_path: Path, pki) -> None:
    ca, server = pki
    rogue_ca = TestCA(tmp_path / "rogue")

    def bundle(issued: Issued, name: str) -> str:  # baresip wants certificate and key in one file
        path = tmp_path / f"{name}.pem"
        path.write_bytes(Path(issued.leaf).read_bytes() + Path(issued.key).read_bytes())
        return str(path)

    good = bundle(ca.issue("phone", dns=["phone.test"], client=True), "good")
    rogue = bundle(rogue_ca.issue("phone", dns=["phone.test"], client=True), "rogue")
    ctx, tls_port = tls_node(tmp_path / "node", ca, server, tls={"require_client_cert": True})
    with ctx as node:
        proxy = f"{LOOPBACK}:{tls_port}"

        def refused(why: str) -> None:  # the node's aggregated log: the 2nd is in the interval's counts
            deadline = time.monotonic() + 15
            while why not in node.log():
                assert time.monotonic() < deadline, node.log()[-3000:]
                time.sleep(0.1)

        # under TLS 1.3 the client learns of the refusal only after its handshake (libre then waits
        # for its REGISTER to time out): the node's log says why, and no registration is ever made
        with Baresip(tmp_path / "rogue-ua", "mallory", proxy, ca.cert, client_cert=rogue) as mallory:
            refused("certificate verify failed")
            assert mallory.registration(2) != "OK"
        with Baresip(tmp_path / "nocert-ua", "nobody", proxy, ca.cert) as nobody:
            refused("peer did not return a certificate")
            assert nobody.registration(2) != "OK"
        with Baresip(tmp_path / "good-ua", "trent", proxy, ca.cert, client_cert=good) as trent:
            assert trent.registration() == "OK"
        log = node.log()
    assert "REGISTER" in log and "mallory" not in log and "from tls:" in log


# -- outbound TLS: the peer's name is checked ---------------------------------------------------------

TRUNK_ROUTE = '''"""Test route: calls to trunkgood/trunkbad go to a TLS peer by set_dst (as a trunk would);
the branch's own final answer is passed on (the proxy would turn a lone 503 into 500, RFC 3261
§16.7 step 6)."""
from edgeproxy_routes.default import request_route as default_route


def passthrough(msg):
    msg.sl_send_reply(msg.reply_code, msg.reply.reason)


async def request_route(msg):
    if not msg.has_totag() and msg.rU in ("trunkgood", "trunkbad"):
        msg.du = msg.params[msg.rU]
        msg.record_route()
        msg.t_on_failure(passthrough)
        msg.t_relay()
        return
    await default_route(msg)
'''


def test_outbound_tls_to_a_peer_with_the_wrong_name_is_refused_503(tmp_path: Path, pki) -> None:
    require_sipp()
    ca, server = pki
    good_peer = ca.issue("good-peer", dns=["peer.test"], ips=[LOOPBACK])
    bad_peer = ca.issue("bad-peer", dns=["peer.test"])  # no 127.0.0.1 in it: the name does not match
    good_ctx, good_port = tls_node(tmp_path / "good-peer", ca, good_peer)
    bad_ctx, bad_port = tls_node(tmp_path / "bad-peer", ca, bad_peer)
    route = tmp_path / "trunk_route.py"
    route.write_text(TRUNK_ROUTE)
    with good_ctx as good, bad_ctx as bad:
        params = {"trunkgood": f"sip:{LOOPBACK}:{good_port};transport=tls",
                  "trunkbad": f"sip:{LOOPBACK}:{bad_port};transport=tls"}
        edge_ctx, _ = tls_node(tmp_path / "edge", ca, server, route=str(route), route_params=params)
        with edge_ctx as edge:
            sipp = Sipp(tmp_path / "caller", "udp")
            started = time.monotonic()
            sipp.run("uac_expect", edge.address, user="trunkbad",
                     keys={"domain": DOMAIN, "expect_code": 503}).assert_ok()
            assert time.monotonic() - started < 10
            # the same route to a peer whose certificate does name 127.0.0.1 gets there (its
            # registrar knows no trunkgood: 404 from the peer, over TLS)
            sipp.run("uac_expect", edge.address, user="trunkgood",
                     keys={"domain": DOMAIN, "expect_code": 404}).assert_ok()
            log = edge.log()
        good_log, bad_log = good.log(), bad.log()
    assert re.search(r"INVITE \S+ from tls:127\.0\.0\.1:\d+", good_log), good_log[-2000:]
    assert "INVITE" not in bad_log  # nothing was sent to the peer that could not prove its name
    assert "TLS handshake failed from 127.0.0.1" in log and "certificate name mismatch" in log, log[-3000:]
