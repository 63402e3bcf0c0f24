"""The configurations in ``examples/`` start as an operator starts them and answer.

Each example runs as the real ``twistd -n --pidfile= edgeproxy --config FILE`` from a copy of its
directory. The copy differs from the file in the repository only in its ports (free ones instead of
5060/5061/8443/5555: other tests, or another run, may hold those on this machine) and, for the
store, the database URL of the SecantusDB (Mongo wire) server the test started; the files as written
are loaded by the configuration loader unchanged (:func:`test_examples_load_as_written`). Every
node answers an OPTIONS with 200 (over TLS and WSS too, trusting only the certificate that
``examples/tls-wss/make-cert.sh`` made); the federated pair completes a call through both nodes:
SIPp as FreeSWITCH (127.0.0.21) calls through Y a SIPp phone (127.0.0.31) registered with X.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import time
import tomllib
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import mongo_server
from support.polling import wait_log
from support.ports import free_port
from support.sipp_harness import EdgeproxyNode, Sipp, spawn_twistd, toml_text
from support.transport import status_of
from support.ws_client import ws_frame, ws_read, ws_upgrade

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DOMAIN = "sip.example.com"
FREESWITCH_IP, PHONE_IP = "127.0.0.21", "127.0.0.31"
START_TIMEOUT = 20.0


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*/*.toml"))


def make_cert(directory: Path) -> Path:
    """The documented script, run as documented, into ``directory/certs``."""
    subprocess.run(["sh", str(directory / "make-cert.sh")], check=True, capture_output=True, timeout=60)
    return directory / "certs" / "edgeproxy.pem"


def copy_example(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target)
    return target


# -- the files as written ---------------------------------------------------------------------------

def test_every_topology_of_the_issue_has_an_example() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) == [
        "failover", "federated", "redirect", "single", "tls-wss"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in example_files():
        assert str(path.relative_to(REPO)) in readme or str(path.parent.relative_to(REPO)) in readme, path


@pytest.mark.parametrize("path", example_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_load_as_written(path: Path, tmp_path: Path) -> None:
    from edgeproxy.config import load_config

    directory = copy_example(path.parent.name, tmp_path)
    if (directory / "make-cert.sh").exists():
        make_cert(directory)
    config = load_config(str(directory / path.name))
    # loopback only, as the file says: it starts on any Linux machine as it is
    assert all(re.match(r"^\w+:127\.", spec) for spec in config.node.listen), config.node.listen


# -- running them -------------------------------------------------------------------------------------

class Ports:
    """The example's ports replaced by free ones, one new port per (host, old port), everywhere the
    file names them: listeners, cluster links, sip_addr and route_params.private_ip."""

    def __init__(self) -> None:
        self.new: dict[tuple[str, int], int] = {}

    def __call__(self, host: str, port: int) -> int:
        if (host, port) not in self.new:
            self.new[host, port] = free_port(host)
        return self.new[host, port]

    def hostport(self, text: str, default: int = 5060) -> str:
        host, _, port = text.partition(":")
        return f"{host}:{self(host, int(port or default))}"


def rewrite(path: Path, ports: Ports, store_url: str | None = None) -> dict[str, Any]:
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    node = config["node"]
    node["listen"] = [f"{t}:{ports.hostport(hp)}" for t, _, hp in (s.partition(":") for s in node["listen"])]
    node["log_level"] = "debug"
    for row in config.get("cluster", {}).get("nodes", []):
        row["url"] = "bin:" + ports.hostport(row["url"].removeprefix("bin:"), 5555)
        row["sip_addr"] = ports.hostport(row["sip_addr"])
    params = config.get("route_params", {})
    if "private_ip" in params:
        params["private_ip"] = ports.hostport(params["private_ip"])
    if store_url is not None:
        config["federation"]["cachedb_url"] = store_url
    path.write_text(toml_text(config), encoding="utf-8")
    return config


def options_request(transport: str, local: tuple[str, int], host: str, port: int) -> bytes:
    n = time.monotonic_ns()
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch=z9hG4bK-ex{n};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{DOMAIN}>;tag=ex{n}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: ex-{n}@{local[0]}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def options_udp(host: str, port: int, timeout: float = 0.5) -> int | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        s.sendto(options_request("UDP", s.getsockname(), host, port), (host, port))
        try:
            while True:
                status = status_of(s.recv(65535))
                if status >= 200:
                    return status
        except OSError:
            return None


def options_tls(host: str, port: int, ca: Path) -> int:
    """OPTIONS over TLS, trusting only ``ca`` and checking the certificate names ``host``."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(options_request("TLS", s.getsockname(), host, port))
        return status_of(s.recv(65535))


def options_wss(host: str, port: int, ca: Path) -> int:
    """OPTIONS over a WebSocket (subprotocol ``sip``, RFC 7118) in TLS, as a browser would send it."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw, server_hostname=host) as s:
        head = ws_upgrade(s, host, port, origin=f"https://{host}")
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(ws_frame(options_request("WSS", ("df7jal23ls0d.invalid", 0), host, port)))
        while True:
            opcode, payload = ws_read(s)
            assert opcode in (1, 2), f"opcode {opcode}"
            status = status_of(payload)
            if status >= 200:
                return status


def wait_answering(node: EdgeproxyNode) -> EdgeproxyNode:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not node.running():
            pytest.fail(f"{node.config_path.name} exited with {node.process.returncode}:\n{node.log()[-3000:]}")
        status = options_udp(node.host, node.port)
        if status is not None:
            assert status == 200, node.log()[-3000:]
            return node
        if time.monotonic() > deadline:
            pytest.fail(f"{node.config_path.name}: no answer to OPTIONS in {START_TIMEOUT:g} s:\n{node.log()[-3000:]}")


def start(stack: ExitStack, path: Path, ports: Ports, store_url: str | None = None) -> EdgeproxyNode:
    config = rewrite(path, ports, store_url)
    transport, _, hostport = config["node"]["listen"][0].partition(":")
    host, _, port = hostport.rpartition(":")
    assert transport == "udp"
    node = spawn_twistd(path, host, int(port), tuple(s.split(":", 1)[0] for s in config["node"]["listen"]),
                        cwd=path.parent, log_path=path.with_suffix(".log"))
    stack.callback(node.stop)
    return wait_answering(node)


@pytest.fixture
def store() -> Iterator[mongo_server.MongoTarget]:
    with mongo_server.running_target() as target:
        yield target


def test_single_node(tmp_path: Path) -> None:
    directory = copy_example("single", tmp_path)
    with ExitStack() as stack:
        node = start(stack, directory / "edgeproxy.toml", Ports())
        assert "edgeproxy listening on" in node.log()


@pytest.mark.parametrize("name", ["failover", "federated", "redirect"])
def test_pair_starts_and_both_nodes_answer(name: str, tmp_path: Path, store: mongo_server.MongoTarget) -> None:
    directory = copy_example(name, tmp_path)
    ports = Ports()
    url = store.url(f"userlocation_{name}") if name != "failover" else None
    with ExitStack() as stack:
        x = start(stack, directory / "node-x.toml", ports, url)
        y = start(stack, directory / "node-y.toml", ports, url)
        assert (x.host, y.host) == ("127.0.0.11", "127.0.0.12")
        assert options_udp(x.host, x.port) == 200 and options_udp(y.host, y.port) == 200


def test_tls_wss_answers_over_udp_tls_and_wss(tmp_path: Path) -> None:
    directory = copy_example("tls-wss", tmp_path)
    ca = make_cert(directory)
    ports = Ports()
    with ExitStack() as stack:
        node = start(stack, directory / "edgeproxy.toml", ports)
        assert options_tls("127.0.0.1", ports.new["127.0.0.1", 5061], ca) == 200
        assert options_wss("127.0.0.1", ports.new["127.0.0.1", 8443], ca) == 200
        assert node.running()


def test_federated_pair_completes_a_call_through_both_nodes(tmp_path: Path, store: mongo_server.MongoTarget) -> None:
    directory = copy_example("federated", tmp_path)
    ports = Ports()
    url = store.url("userlocation_call")
    with ExitStack() as stack:
        x = start(stack, directory / "node-x.toml", ports, url)
        y = start(stack, directory / "node-y.toml", ports, url)
        wait_log(x, r"cluster 1: node 2 is UP", timeout=20.0)
        wait_log(y, r"cluster 1: node 1 is UP", timeout=20.0)
        phone = Sipp(tmp_path / "phone", "udp", local_ip=PHONE_IP).start(
            "register", x.address, user="alice", ooc="uas_answer", duration_ms=60_000, timeout=70,
            keys={"expires": 300, "domain": DOMAIN})
        stack.callback(phone.stop)
        phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        fs = Sipp(tmp_path / "freeswitch", "udp", local_ip=FREESWITCH_IP)
        deadline = time.monotonic() + 10
        while True:  # the record reaches the store asynchronously: a 404 before it is there is retried
            result = fs.run("uac_call", y.address, user="alice", duration_ms=100, timeout=15, keys={"domain": DOMAIN})
            if result.ok or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert result.ok, result.describe()
        invite = phone.wait_for_message(r"^INVITE ", timeout=10)
        # FreeSWITCH -> Y (global lookup) -> X (local lookup) -> alice: both nodes Record-Route
        hosts = re.findall(r"<sip:([0-9.]+):(\d+)", ",".join(invite.header("Record-Route")))
        assert hosts == [(x.host, str(x.port)), (y.host, str(y.port))], invite.header("Record-Route")
        assert len(invite.header("Via")) == 3
