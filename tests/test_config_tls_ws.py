"""``[tls]`` and ``[ws]`` in the node configuration: checked keys, one-line errors, the settings handed
to the transports, and ``twistd edgeproxy`` listening on tls/ws/wss from a config file."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from edgeproxy.config import Config, ConfigError, load_config
from edgeproxy.service import build_node
from edgeproxy.transport.tls import TlsSettings
from edgeproxy.transport.ws import WsSettings
from support.node_harness import twistd_argv
from support.sipp_harness import free_port
from support.tls_ca import TestCA

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, object, object]:
    ca = TestCA(tmp_path_factory.mktemp("cfgpki"))
    return ca, ca.issue("server", dns=["sip.test"], ips=["127.0.0.1"]), ca.issue("other", dns=["other.test"])


def load(tmp_path: Path, text: str):
    path = tmp_path / "edgeproxy.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path))


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_the_transport_defaults() -> None:
    config = load_config(None)
    assert config.tls == TlsSettings() and config.ws == WsSettings()
    assert Config().tls == TlsSettings() and Config().ws == WsSettings()


def test_every_tls_and_ws_key(tmp_path: Path, pki) -> None:
    ca, server, other = pki
    (tmp_path / "certs").mkdir()
    config = load(tmp_path, f"""
[node]
listen = ["tls:127.0.0.1:5061", "ws:127.0.0.1:8080", "wss:127.0.0.1:8443"]

[tls]
certificate = "{server.cert}"
key = "{server.key}"
ca = "{ca.cert}"
min_version = 1.2
max_version = "1.3"
ciphers = "ECDHE+AESGCM"
groups = "X25519:P-256"
require_client_cert = true
verify_server = false
handshake_timeout = 3

[tls.sni]
"other.test" = {{ certificate = "{other.cert}", key = "{other.key}" }}

[ws]
path = "/ws"
origins = ["https://app.example.com", "https://*.example.org"]
max_message_size = 8192
ping_interval = 20
ping_timeout = 5
idle_timeout = 0
max_connections = 100
handshake_timeout = 2.5
""")
    assert config.tls == TlsSettings(
        certificate=server.cert, key=server.key, ca=ca.cert, min_version="1.2", max_version="1.3",
        ciphers="ECDHE+AESGCM", groups="X25519:P-256", require_client_cert=True, verify_server=False,
        sni={"other.test": (other.cert, other.key)}, handshake_timeout=3.0)
    assert config.ws == WsSettings(
        path="/ws", origins=("https://app.example.com", "https://*.example.org"), max_message_size=8192,
        ping_interval=20.0, ping_timeout=5.0, idle_timeout=0.0, max_connections=100, handshake_timeout=2.5)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, pki) -> None:
    ca, server, _ = pki
    (tmp_path / "server.pem").write_bytes(Path(server.cert).read_bytes())
    (tmp_path / "server.key").write_bytes(Path(server.key).read_bytes())
    config = load(tmp_path, '[tls]\ncertificate = "server.pem"\nkey = "./server.key"\n')
    assert config.tls.certificate == str(tmp_path / "server.pem")
    assert config.tls.key == str(tmp_path / "server.key")


@pytest.mark.parametrize(("text", "message"), [
    ('[node]\nlisten = ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]\n',
     'config: node.listen[1]: a tls listener needs tls.certificate and tls.key, got "tls:127.0.0.1:5061"'),
    ('[node]\nlisten = ["wss:127.0.0.1:8443"]\n',
     'config: node.listen[0]: a wss listener needs tls.certificate and tls.key, got "wss:127.0.0.1:8443"'),
    ('[tls]\ncertificate = "missing.pem"\n', 'config: tls.certificate: no such file: "{dir}/missing.pem"'),
    ("[tls]\ncertificate = 5\n", "config: tls.certificate: must be a file path string, got 5"),
    ('[tls]\nmin_version = "1.4"\n', 'config: tls.min_version: must be one of "1.0", "1.1", "1.2", "1.3", got "1.4"'),
    ('[tls]\nmax_version = "tls1.3"\n',
     'config: tls.max_version: must be one of "1.0", "1.1", "1.2", "1.3" or empty, got "tls1.3"'),
    ('[tls]\nmin_version = "1.3"\nmax_version = "1.2"\n',
     "config: tls.max_version: must be >= tls.min_version (1.3), got 1.2"),
    ("[tls]\nrequire_client_cert = true\n",
     "config: tls.require_client_cert: needs tls.ca, the authorities client certificates must chain to"),
    ('[tls]\nrequire_client_cert = "yes"\n', 'config: tls.require_client_cert: must be true or false, got "yes"'),
    ("[tls]\nhandshake_timeout = 0\n", "config: tls.handshake_timeout: must be a number of seconds > 0, got 0"),
    ('[tls]\ngroups = "NO-SUCH-GROUP"\n',
     "config: tls.groups: TLS groups 'NO-SUCH-GROUP' are not a list of groups this OpenSSL knows"),
    ("[tls]\nverfy_server = false\n", 'config: tls.verfy_server: unknown key in [tls] (did you mean "verify_server"?)'),
    ('[tls.sni]\n"bad name!" = { certificate = "a", key = "b" }\n',
     "config: tls.sni.bad name!: must be a DNS name (or *.parent), as a client sends it in SNI"),
    ('[tls.sni]\n"a.example" = "x"\n',
     'config: tls.sni.a.example: must be a table { certificate = "...", key = "..." }, got "x"'),
    ('[tls.sni]\n"a.example" = { cert = "x" }\n',
     "config: tls.sni.a.example.cert: unknown key (expected one of certificate, key)"),
    ('[ws]\npath = "ws"\n', 'config: ws.path: must be "*" (any path) or an HTTP path starting with "/", got "ws"'),
    ('[ws]\norigins = "https://a.example"\n',
     'config: ws.origins: must be a list of origins like "https://app.example.com", got "https://a.example"'),
    ('[ws]\norigins = ["a.example"]\n',
     'config: ws.origins[0]: must be an origin like "https://app.example.com" (* wildcards allowed), got "a.example"'),
    ("[ws]\nmax_message_size = -1\n", "config: ws.max_message_size: must be an integer from 0 to 16777216, got -1"),
    ("[ws]\nping_interval = -5\n", "config: ws.ping_interval: must be a number of seconds >= 0 (0: off), got -5"),
    ("[ws]\nhandshake_timeout = 0\n", "config: ws.handshake_timeout: must be a number of seconds > 0, got 0"),
    ("[ws]\nmax_connections = 1.5\n", "config: ws.max_connections: must be an integer >= 0, got 1.5"),
    ("[ws]\npong = 1\n", "config: ws.pong: unknown key in [ws] (expected one of handshake_timeout, idle_timeout,"
                         " max_connections, max_handshake_size, max_message_size, origins, path, ping_interval,"
                         " ping_timeout)"),
])
def test_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message.replace("{dir}", str(tmp_path))


def test_tls_files_are_loaded_when_the_config_is_checked(tmp_path: Path, pki) -> None:
    ca, server, other = pki
    message = error_of(tmp_path, f'[tls]\ncertificate = "{server.cert}"\nkey = "{other.key}"\n')
    assert message.startswith("config: tls.key: the TLS key ") and "does not match the certificate" in message
    message = error_of(tmp_path, f'[tls]\ncertificate = "{server.key}"\nkey = "{server.key}"\n')
    assert message.startswith("config: tls.certificate: ") and "holds no PEM certificate" in message
    message = error_of(tmp_path, '[tls]\nciphers = "NO-SUCH-CIPHER"\n')
    assert message.startswith("config: tls.ciphers: TLS ciphers 'NO-SUCH-CIPHER' are not an OpenSSL cipher string")
    assert error_of(tmp_path, f'[tls]\ncertificate = "{server.cert}"\n') == \
        "config: tls.key: tls.certificate and tls.key go together (both or neither)"


def test_build_node_hands_the_settings_to_the_transports(tmp_path: Path, pki) -> None:
    ca, server, _ = pki
    config = load(tmp_path, f'[tls]\ncertificate = "{server.cert}"\nkey = "{server.key}"\nmax_version = "1.2"\n'
                            '[ws]\npath = "/sip"\nmax_connections = 7\n')
    running = build_node(config)
    assert running.transports.tls_settings is config.tls
    assert running.transports.ws_settings is config.ws


def test_twistd_listens_on_tls_ws_and_wss_from_a_config_file(tmp_path: Path, pki) -> None:
    """``twistd -n edgeproxy --config x.toml`` with tls, ws and wss listeners: a TLS client verifying
    the test CA gets an answer to OPTIONS, and both WebSocket listeners answer the upgrade with the
    ``sip`` subprotocol (101)."""
    ca, server, _ = pki
    udp, tls_port, ws_port, wss_port = free_port(), free_port(), free_port(), free_port()
    path = tmp_path / "edge.toml"
    path.write_text(f"""
[node]
listen = ["udp:127.0.0.1:{udp}", "tls:127.0.0.1:{tls_port}", "ws:127.0.0.1:{ws_port}", "wss:127.0.0.1:{wss_port}"]
log_level = "debug"
[tls]
certificate = "{server.cert}"
key = "{server.key}"
[ws]
path = "/ws"
""", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "twistd.log", "wb")
    proc = subprocess.Popen(twistd_argv() + ["-n", "--pidfile=", "edgeproxy", "--config", str(path)], cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while b"edgeproxy listening on" not in (tmp_path / "twistd.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "twistd.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "twistd.log").read_text()
            time.sleep(0.1)
        context = ssl.create_default_context(cafile=ca.cert)
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="sip.test") as s:
                s.sendall(("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK-cfg1\r\n"
                           "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
                           "Call-ID: cfg-tls\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
                assert s.recv(65536).startswith(b"SIP/2.0 ")
        upgrade = (b"GET /ws HTTP/1.1\r\nHost: sip.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   b"Sec-WebSocket-Protocol: sip\r\n\r\n")
        with socket.create_connection(("127.0.0.1", ws_port), timeout=5) as s:
            s.sendall(upgrade)
            head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol: sip" in head
        with socket.create_connection(("127.0.0.1", wss_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="sip.test") as s:
                s.sendall(upgrade)
                head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol: sip" in head
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, 15)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, 9)
                proc.wait()
        log.close()


def test_twistd_refuses_a_wss_listener_without_a_certificate(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[node]\nlisten = ["wss:127.0.0.1:8443"]\n', encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(twistd_argv() + ["-n", "--pidfile=", "edgeproxy", "--config", str(path)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[0] == \
        'config: node.listen[0]: a wss listener needs tls.certificate and tls.key, got "wss:127.0.0.1:8443"'
