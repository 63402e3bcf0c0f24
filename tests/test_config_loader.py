"""The configuration as a loader: listen specs checked once, by the transports' parser, when the
configuration is loaded (a file, ``--listen``, ``twistd``), and ``edgeproxy.config`` importing no
layer until a configuration is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from edgeproxy import tap
from edgeproxy.config import ConfigError, load_config
from edgeproxy.sip.endpoint import Endpoint
from edgeproxy.transport.listen import parse_listen

REPO = Path(__file__).resolve().parent.parent


def load_listen(*specs: str) -> tuple[str, ...]:
    return load_config(None, {"node.listen": list(specs)}).node.listen


@pytest.mark.parametrize(
    ("spec", "stored"),
    [
        ("udp:127.0.0.1:5060", "udp:127.0.0.1:5060"),
        ("TCP:[::1]:5060", "tcp:[::1]:5060"),
        ("ws:[2001:db8::1]:443", "ws:[2001:db8::1]:443"),
        ("ws:0.0.0.0:80", "ws:0.0.0.0:80"),
        ("udp:[0:0::1]:5060", "udp:[::1]:5060"),
    ],
)
def test_listen_spec_syntax(spec: str, stored: str) -> None:
    """What the configuration stores is the spec as the Endpoint the transports will listen on prints it."""
    assert load_listen(spec) == (stored,)
    assert str(parse_listen(stored)) == stored


@pytest.mark.parametrize(
    "spec",
    ["udp:127.0.0.1", "127.0.0.1:5060", "udp:[::1]", "udp:[::g]:5060", "udp:[127.0.0.1]:5060", "udp:host:65536",
     "udp::5060", "sctp:127.0.0.1:5060", "udp:1.2.3:5060", "udp:-bad-.example:5060", " ",
     "tls:sip.example.com:5061", "udp:example.com:5060", "udp:127.0.0.1:0", "udp:127.0.0.1:70000"],
)
def test_listen_spec_rejects(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"^config: node\.listen\[0\] \(command line\): "):
        load_listen(spec)


def test_parse_listen_strict_is_what_the_configuration_accepts() -> None:
    """Tests and embedders may leave the port out or ask for any free one; a node's file may not."""
    assert parse_listen("udp:127.0.0.1") == Endpoint("UDP", "127.0.0.1", 5060)
    assert parse_listen("tcp:127.0.0.1:0") == Endpoint("TCP", "127.0.0.1", 0)
    for spec in ("udp:127.0.0.1", "tcp:127.0.0.1:0"):
        with pytest.raises(ValueError, match=repr(spec)):
            parse_listen(spec, strict=True)


def test_a_name_to_listen_on_is_refused_when_the_file_is_loaded(tmp_path: Path) -> None:
    """Before: the configuration took ``udp:example.com:5060`` and the transport refused it in
    ``start()``, after twistd had daemonized. Now the one parser refuses it when the file is read."""
    path = tmp_path / "edgeproxy.toml"
    path.write_text('[node]\nlisten = ["udp:127.0.0.1:5060", "udp:example.com:5060"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (
        'config: node.listen[1]: host must be an IPv4 address or an IPv6 address in brackets'
        ' (names are not resolved for listening), got "udp:example.com:5060"')


def test_a_bad_listen_option_is_a_usage_error() -> None:
    options = tap.Options()
    with pytest.raises(usage.UsageError, match=r'^config: node\.listen\[0\] \(command line\): host must be .*'
                                               r'got "udp:example\.com:5060"$'):
        options.parseOptions(["--listen", "udp:example.com:5060"])
    assert options.config is None


def test_twistd_refuses_a_name_to_listen_on_with_status_1(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "edgeproxy",
         "--listen", "tcp:localhost:5060"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ('config: node.listen[0] (command line): host must be an IPv4 address or an IPv6 address'
                             ' in brackets (names are not resolved for listening), got "tcp:localhost:5060"\n')


def test_importing_the_loader_imports_no_layer() -> None:
    """``edgeproxy.config`` maps section names to where they are described; importing it loads none
    of them (no Twisted transports, TLS or WebSocket library, no proxy)."""
    code = (
        "import sys\n"
        "import edgeproxy.config\n"
        "heavy = ('autobahn', 'OpenSSL', 'twisted', 'edgeproxy.proxy', 'edgeproxy.transport')\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(heavy))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_gc_full_interval_refuses_nan_and_infinity(tmp_path) -> None:
    """A near-copy of the seconds check let NaN and infinity through; there is one check now."""
    import pytest

    from edgeproxy.config import ConfigError, load_config

    for bad in ("nan", "inf"):
        path = tmp_path / f"gc-{bad}.toml"
        path.write_text(f"[node]\ngc_full_interval = {bad}\n")
        with pytest.raises(ConfigError, match="node.gc_full_interval: must be a number of seconds >= 0"):
            load_config(str(path))


def test_an_ipv4_address_in_brackets_is_refused_everywhere(tmp_path) -> None:
    """``[1.2.3.4]`` used to pass as node.advertise; federation and the MI refused it with checks of
    their own. The one IP-literal parser refuses it now, for all of them."""
    import pytest

    from edgeproxy.config import ConfigError, load_config

    path = tmp_path / "advertise.toml"
    path.write_text('[node]\nadvertise = "[192.0.2.1]"\n')
    with pytest.raises(ConfigError, match="node.advertise"):
        load_config(str(path))


def test_the_periodic_full_collection_logs_at_debug_only(logged) -> None:
    """Every five minutes by default: noise at the default level (issue 15), so debug."""
    from twisted.logger import LogLevel

    from edgeproxy.gcpolicy import GarbagePolicy

    GarbagePolicy(300.0).collect()
    lines = [e for e in logged if "full garbage collection" in e.get("log_format", "")]
    assert [e["log_level"] for e in lines] == [LogLevel.debug]
