"""Phones behind a REAL NAT (issue 11): network namespaces and nftables masquerade instead of the
loopback stand-in of ``test_e2e_nat.py``.

The test builds its own three namespaces and two veth pairs (names unique per run, all deleted in a
finalizer, whatever happened)::

    phone ns                       nat ns                                  node ns
    100.64.0.2 --veth-- 100.64.0.1 | masquerade (random ports) | 192.0.2.1 --veth-- 192.0.2.2  edgeproxy
    SIPp phone                      nftables, ip_forward=1                          127.0.0.21 SIPp "FreeSWITCH"

The phone writes its real, private (RFC 6598 shared) address in Via, Contact and SDP; the node's
namespace has no route to 100.64/10 at all, so the only way a request reaches the phone is through
the NAT's mapping -- the address and port the NAT gave the phone's flow, which the node learned from
the REGISTER (UDP flow token, ``received``). Addresses exist only inside the namespaces the test
created (TEST-NET-1 on the public side); nothing is sent anywhere else. The node runs the shipped
default route with no NAT setting. Every process started here is stopped by its PID (``ip netns
exec`` execs the command, so the PID is SIPp's or twistd's).

Needs root, ``ip`` (iproute2) and ``nft`` (nftables, installed by scripts/prepare-dev.sh): skipped
with the reason elsewhere, a failure under CI=true.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from support.sipp_harness import EdgeproxyNode, Sipp, SippProcess, edgeproxy_node, require_sipp

PHONE_IP, NAT_INSIDE = "100.64.0.2", "100.64.0.1"  # the private side (RFC 6598 shared address space)
NAT_PUBLIC, NODE_IP = "192.0.2.1", "192.0.2.2"     # the public side (TEST-NET-1, RFC 5737)
FREESWITCH = "127.0.0.21"                         # on the node namespace's own loopback
NODE_PORT = 5060


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run runs as root and scripts/prepare-dev.sh installs nftables)",
                    pytrace=False)
    pytest.skip(reason)


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


class Nat:
    """The three namespaces and two veth pairs; :meth:`delete` removes every one it made."""

    def __init__(self) -> None:
        suffix = f"{os.getpid() % 0x100000:x}{secrets.token_hex(2)}"  # interface names <= 15 bytes
        self.phone, self.nat, self.node = (f"ep-{role}-{suffix}" for role in ("phone", "nat", "node"))
        self.phone_if, self.inside_if = f"epp{suffix}", f"epi{suffix}"
        self.public_if, self.node_if = f"epo{suffix}", f"epn{suffix}"
        self.made: list[str] = []

    def build(self) -> None:
        for ns in (self.phone, self.nat, self.node):
            _run("ip", "netns", "add", ns)
            self.made.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        # veth pairs are created straight inside the namespaces: deleting a namespace deletes them
        _run("ip", "link", "add", self.phone_if, "netns", self.phone, "type", "veth",
             "peer", "name", self.inside_if, "netns", self.nat)
        _run("ip", "link", "add", self.public_if, "netns", self.nat, "type", "veth",
             "peer", "name", self.node_if, "netns", self.node)
        for ns, dev, address in ((self.phone, self.phone_if, PHONE_IP), (self.nat, self.inside_if, NAT_INSIDE),
                                 (self.nat, self.public_if, NAT_PUBLIC), (self.node, self.node_if, NODE_IP)):
            _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        _run("ip", "-n", self.phone, "route", "add", "default", "via", NAT_INSIDE)
        _run("ip", "netns", "exec", self.nat, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        # source NAT of everything leaving on the public side, with random ports: the node sees
        # 192.0.2.1 and a port the phone never wrote anywhere
        _run("ip", "netns", "exec", self.nat, "nft", "-f", "-", stdin=(
            "table ip edgeproxy_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "{self.public_if}" counter masquerade random\n'
            "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            "    counter\n"
            "  }\n"
            "}\n"))

    def forwarded_packets(self) -> int:
        """Packets the NAT forwarded either way (the masquerade rule itself sees only the first
        packet of each mapping)."""
        done = subprocess.run(["ip", "netns", "exec", self.nat, "nft", "list", "table", "ip", "edgeproxy_nat"],
                              capture_output=True, text=True, timeout=20, check=True)
        for line in done.stdout.splitlines():
            if line.strip().startswith("counter packets"):
                return int(line.split("packets", 1)[1].split()[0])
        raise AssertionError(f"no forward counter in:\n{done.stdout}")

    def delete(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.made.clear()


@pytest.fixture(scope="module")
def nat() -> Iterator[Nat]:
    if os.geteuid() != 0:
        _unavailable("a real NAT needs root (network namespaces, nftables)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            _unavailable(f"a real NAT needs {tool!r} (iproute2, nftables)")
    require_sipp()
    topology = Nat()
    try:
        try:
            topology.build()
        except RuntimeError as exc:
            _unavailable(f"cannot build network namespaces with a NAT here: {exc}")
        yield topology
    finally:
        topology.delete()


@pytest.fixture(scope="module")
def node(nat: Nat, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    with edgeproxy_node(tmp_path_factory.mktemp("netns-nat") / "node", host=NODE_IP, port=NODE_PORT,
                        transports=("udp",), netns=nat.node) as n:  # no NAT setting: the default
        yield n


def phone_register(nat: Nat, tmp_path: Path, node: EdgeproxyNode, user: str, hangup: str) -> SippProcess:
    """A phone in the phone namespace: REGISTERs its private Via/Contact through the NAT, then
    answers one call (``call_uas.xml``: its own re-INVITE, BYE when ``hangup`` is callee)."""
    sipp = Sipp(tmp_path / f"phone-{user}", "udp", local_ip=PHONE_IP, netns=nat.phone)
    phone = sipp.start("nat_register", node.address, user=user, port=5060, ooc="call_uas", duration_ms=60_000,
                       timeout=70, keys={"domain": NODE_IP, "hangup": hangup})
    ok = phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
    # the node saw the NAT's public address, not the phone's: the registration says so
    assert f'received="sip:{NAT_PUBLIC}:' in "".join(ok.header("Contact")), ok.text
    return phone


def requests(messages: list) -> list[str]:
    return [m.first_line.split(" ")[0] for m in messages if not m.first_line.startswith("SIP/")]


@pytest.mark.parametrize("hangup", ["caller", "callee"])
def test_freeswitch_calls_a_phone_behind_a_real_nat(nat: Nat, node: EdgeproxyNode, tmp_path: Path,
                                                    hangup: str) -> None:
    """INVITE, ACK, FreeSWITCH's re-INVITE and the phone's, the BYE from either side: every request
    crosses the NAT to the phone's socket, and every answer comes back."""
    user = f"natphone-{hangup}"
    before = nat.forwarded_packets()
    phone = phone_register(nat, tmp_path, node, user, hangup)
    try:
        result = Sipp(tmp_path / "freeswitch", "udp", local_ip=FREESWITCH, netns=nat.node).run(
            "call_uac", node.address, user=user, duration_ms=200 if hangup == "caller" else 0, timeout=20,
            keys={"domain": NODE_IP, "hangup": hangup})
    finally:
        phone_result = phone.stop()
    result.assert_ok()
    expected = ["INVITE", "ACK", "INVITE", "ACK"] + (["BYE"] if hangup == "caller" else [])
    assert requests(phone_result.received()) == expected, phone_result.describe()
    statuses = [m.status for m in phone_result.received() if m.status is not None]
    # the REGISTER's 200, then the 200s to its own re-INVITE (and its BYE when it hangs up)
    assert statuses.count(200) == (2 if hangup == "caller" else 3), phone_result.describe()
    assert result.successful_calls == 1
    assert nat.forwarded_packets() > before  # it really went through the NAT


def test_a_phone_behind_a_real_nat_calls_freeswitch_and_freeswitchs_bye_reaches_it(
        nat: Nat, node: EdgeproxyNode, tmp_path: Path) -> None:
    fs = Sipp(tmp_path / "freeswitch", "udp", local_ip=FREESWITCH, netns=nat.node).start(
        "nat_register", node.address, user="fs-natnet", ooc="call_uas", duration_ms=60_000, timeout=70,
        keys={"domain": NODE_IP, "hangup": "callee"})
    try:
        fs.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        result = Sipp(tmp_path / "phone", "udp", local_ip=PHONE_IP, netns=nat.phone).run(
            "call_uac", node.address, user="fs-natnet", port=5062, timeout=20,
            keys={"domain": NODE_IP, "hangup": "callee"})
    finally:
        fs_result = fs.stop()
    result.assert_ok()
    # FreeSWITCH's re-INVITE and ACK, then its BYE, all through the NAT to the phone
    assert requests(result.received()) == ["INVITE", "ACK", "BYE"], result.describe()
    assert fs_result.failed_calls == 0, fs_result.describe()
