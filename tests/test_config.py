"""The node configuration (edgeproxy.config) and the ``twistd edgeproxy`` command line (edgeproxy.tap)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.tls_ca import TestCA
from twisted.logger import LogLevel
from twisted.python import usage

from edgeproxy import tap
from edgeproxy.config import SECTIONS, Config, ConfigError, load_config, section
from edgeproxy.node_settings import NodeConfig
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.registrar import RegistrarSettings
from edgeproxy.service import build_node
from edgeproxy.sip.parser import Limits
from edgeproxy.transaction import TimerSettings
from edgeproxy.transaction import settings as timer_settings
from edgeproxy.transport.settings import LimitsConfig

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "edgeproxy.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(tmp_path: Path, text: str, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- defaults -------------------------------------------------------------------------------------


def test_no_file_is_a_working_single_node() -> None:
    config = load_config(None)
    assert config.node == NodeConfig(
        listen=("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"), advertise="", domains=(), route="",
        log_level="info", node_id=None,
    )
    assert config.registrar == RegistrarSettings(default_expires=3600, min_expires=60, max_expires=0,
                                                 min_expires_mode="clamp", max_contacts=10, use_domain=False,
                                                 path_mode="lazy")
    assert config.proxy == ProxySettings(True, True, 500, 70)
    assert config.limits == LimitsConfig(65535, 256, 16384, 10000, 600.0)
    assert dict(config.route_params) == {}
    assert config.source is None


def test_timer_b_and_f_default_to_64_t1_rfc3261_table4() -> None:
    timers = load_config(None).timers
    assert timers == TimerSettings(t1=0.5, t2=4.0, t4=5.0, timer_c=120.0)
    assert (timers.t1, timers.t2, timers.t4, timers.b, timers.f, timers.c) == (0.5, 4.0, 5.0, 32.0, 32.0, 120.0)
    assert TimerSettings(t1=0.1).b == pytest.approx(6.4)


def test_timer_b_follows_a_configured_t1_unless_set(tmp_path: Path) -> None:
    timers = load_config(write(tmp_path, "[timers]\nt1 = 0.25\ntimer_f = 3\n")).timers
    assert timers.b == 16.0 and timers.f == 3.0


def test_empty_file_equals_no_file(tmp_path: Path) -> None:
    assert dataclasses.replace(load_config(write(tmp_path, "")), source=None) == load_config(None)


def test_config_default_is_no_file() -> None:
    """``Config()`` (what benchmarks and tests build) has the same defaults as a node without a file."""
    assert Config() == load_config(None)


def test_each_key_is_a_field_of_its_section_class() -> None:
    """The schema names keys, not fields: every key is the field of the same name of the class the
    section becomes (the layer's settings class), so its default is that class's."""
    for name in SECTIONS:
        described = section(name)
        names = {f.name for f in dataclasses.fields(described.cls)}  # type: ignore[arg-type]
        assert set(described.checkers) <= names, name
        assert set(described.defaults) <= set(described.checkers), name


def test_sections_are_the_layers_settings_handed_over_as_they_are(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[node]\ndomains = ["example.com"]\nlog_level = "debug"\n'
                                         "[limits]\nmax_headers = 64\n[timers]\nt1 = 0.25\n"))
    assert isinstance(config.limits, Limits)
    running = build_node(config)
    assert running.registrar.settings is config.registrar
    assert running.node.proxy.timers is config.timers
    assert running.transports.limits is config.limits
    assert running.node.settings == dataclasses.replace(config.proxy, domains=("example.com",), log_decisions=True)


def test_a_rule_a_settings_class_enforces_is_still_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Should the schema miss a rule a settings class enforces, the error is a line naming the section."""
    monkeypatch.setattr(timer_settings, "SECTION", dataclasses.replace(timer_settings.SECTION, before=None))
    assert error_of(tmp_path, "[timers]\nt1 = 5.0\n") == "config: timers: T2 must not be smaller than T1"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config(None).node.listen = ()  # type: ignore[misc]


def test_readme_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TOML example in README.md is a valid configuration (so the documentation stays true)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert blocks, "README.md has no ```toml example"
    (tmp_path / "routes").mkdir()
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        config = load_config(write(tmp_path, block))
        assert isinstance(config, Config)


def test_every_key_in_a_file(tmp_path: Path) -> None:
    route = tmp_path / "myroute.py"
    route.write_text("def request_route(msg):\n    pass\n")
    server = TestCA(tmp_path / "pki").issue("server", dns=["sip.example.com"])  # tls and wss listeners need one
    config = load_config(write(tmp_path, f"""
[tls]
certificate = "{server.cert}"
key = "{server.key}"

[node]
listen = ["udp:0.0.0.0:5060", "TCP:[::1]:5061", "tls:0.0.0.0:5061", "ws:127.0.0.1:8080", "wss:127.0.0.1:8443"]
advertise = "[2001:db8::7]"
domains = ["Example.COM", "203.0.113.7"]
route = "myroute.py"
log_level = "WARNING"
node_id = "edge-1"

[registrar]
default_expires = 1800
min_expires = 30
max_expires = 7200
min_expires_mode = "reject"
max_contacts = 5
use_domain = true
path_mode = "strict"
outbound = false
flow_timer = 25

[timers]
t1 = 0.2
t2 = 2
t4 = 2.5
timer_b = 10
timer_f = 11.5
timer_c = 180

[proxy]
record_route_double = false
auto_100trying = false
no_reply_status = 503
max_forwards_default = 30

[limits]
max_message_size = 4096
max_headers = 64
max_line_length = 1024
max_connections = 100
tcp_idle_timeout = 30

[route_params]
trunk = "sip:freeswitch.example.com"
weights = [1, 2]
"""))
    assert config.node == NodeConfig(
        listen=("udp:0.0.0.0:5060", "tcp:[::1]:5061", "tls:0.0.0.0:5061", "ws:127.0.0.1:8080",
                "wss:127.0.0.1:8443"),
        advertise="2001:db8::7",  # IPv6 kept without brackets, as Endpoint holds hosts
        domains=("example.com", "203.0.113.7"),
        route=str(route),
        log_level="warn",
        node_id="edge-1",
    )
    assert config.registrar == RegistrarSettings(default_expires=1800, min_expires=30, max_expires=7200,
                                                 min_expires_mode="reject", max_contacts=5, use_domain=True,
                                                 path_mode="strict", outbound=False, flow_timer=25)
    assert config.timers == TimerSettings(t1=0.2, t2=2.0, t4=2.5, timer_b=10.0, timer_f=11.5, timer_c=180.0)
    assert config.proxy == ProxySettings(False, False, 503, 30)
    assert config.limits == LimitsConfig(4096, 64, 1024, 100, 30.0)
    assert dict(config.route_params) == {"trunk": "sip:freeswitch.example.com", "weights": [1, 2]}
    assert config.source == str(tmp_path / "edgeproxy.toml")


# -- [auth] ---------------------------------------------------------------------------------------------


def test_no_auth_section_means_no_authenticator() -> None:
    config = load_config(None)
    assert config.auth is None and build_node(config).node.auth is None


def test_auth_section_with_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[auth]
secret = "s3cret"
nonce_expire = 45
nonce_reuse = true
qop = "auth,auth-int"
algorithms = ["sha-256", "MD5"]
calculate_ha1 = true
use_domain = true
password_column = "pw"
load_credentials = ["rpid", "email_address"]
timeout = 1.5
table = "subscriber"
[auth.users]
"alice@example.com" = "wonderland"
bob = "builder"
"""))
    a = config.auth
    assert (a.secret, a.nonce_expire, a.nonce_reuse, a.qop, a.algorithms) == ("s3cret", 45.0, True, "auth,auth-int",
                                                                            ("SHA-256", "MD5"))
    assert (a.calculate_ha1, a.use_domain, a.password_column, a.load_credentials, a.timeout) == (
        True, True, "pw", ("rpid", "email_address"), 1.5)
    assert dict(a.users) == {"alice@example.com": "wonderland", "bob": "builder"}
    running = build_node(config)
    assert running.node.auth is not None and running.node.auth.settings is a


def test_auth_with_a_database_builds_the_subscriber_table_without_connecting(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[auth]\ndb_url = "mysql://opensips:pw@db.example:3307/opensips"\n'))
    store = build_node(config).node.auth.store
    assert type(store).__name__ == "SubscriberTable"
    store.close()


@pytest.mark.parametrize(("text", "message"), [
    ('[auth]\nqop = "auth-conf"\n',
     'config: auth.qop: must be one of "auth", "auth-int", "auth,auth-int", "", got "auth-conf"'),
    ('[auth]\nalgorithms = ["MD5", "SHA-1"]\n',
     'config: auth.algorithms[1]: must be one of MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess,'
     ' got "SHA-1"'),
    ("[auth]\nalgorithms = []\n", 'config: auth.algorithms: must be a non-empty list like ["SHA-256", "MD5"], got []'),
    ("[auth]\nnonce_expire = 0\n", "config: auth.nonce_expire: must be a number of seconds > 0, got 0"),
    ('[auth]\ndb_url = "postgres://x/y"\n',
     "config: auth.db_url: scheme 'postgres' is not supported (use mysql://)"),
    ('[auth]\ntable = "subscriber; DROP TABLE x"\n',
     'config: auth.table: must be a plain SQL name (letters, digits, _), got "subscriber; DROP TABLE x"'),
    ('[auth.users]\nalice = 5\n', "config: auth.users.alice: must be a non-empty password string"),
    ('[auth.users]\n"al ice" = "pw"\n', "config: auth.users.al ice: must be a user name, or user@domain"),
    ('[auth]\ndb_url = "mysql://db/opensips"\n[auth.users]\nalice = "pw"\n',
     "config: auth: give either db_url (the subscriber table) or [auth.users], not both"),
    ("[auth]\nsecrets = 1\n", 'config: auth.secrets: unknown key in [auth] (did you mean "secret"?)'),
])
def test_auth_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_pike_section(tmp_path: Path) -> None:
    assert load_config(None).pike is None and build_node(load_config(None)).node.flood is None
    config = load_config(write(tmp_path, '[pike]\nsampling_time_unit = 1\nreqs_density_per_unit = 50\n'
                                         'remove_latency = 60\ncheck_all = true\ntrusted = ["10.0.1.50", "::1"]\n'
                                         "max_tracked = 1000\n"))
    p = config.pike
    assert (p.sampling_time_unit, p.reqs_density_per_unit, p.remove_latency, p.check_all, p.trusted, p.max_tracked) \
        == (1.0, 50, 60.0, True, ("10.0.1.50", "::1"), 1000)
    assert build_node(config).node.flood.settings is p
    assert error_of(tmp_path, '[pike]\ntrusted = ["freeswitch"]\n') == \
        'config: pike.trusted[0]: must be an IP address, got "freeswitch"'
    assert error_of(tmp_path, "[pike]\nreqs_density_per_unit = 0\n") == \
        "config: pike.reqs_density_per_unit: must be an integer >= 1, got 0"


# -- errors: one line naming the key and the problem ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[registrar]\nmin_expires = "abc"\n',
         'config: registrar.min_expires: must be an integer >= 0, got "abc"'),
        ("[registrar]\nmin_expires = -1\n", "config: registrar.min_expires: must be an integer >= 0, got -1"),
        ("[registrar]\nmax_contacts = true\n", "config: registrar.max_contacts: must be an integer >= 0, got true"),
        ("[registrar]\ndefault_expires = 0\n", "config: registrar.default_expires: must be an integer >= 1, got 0"),
        ("[registrar]\nmax_callid_len = 0\n", "config: registrar.max_callid_len: must be an integer >= 1, got 0"),
        ("[registrar]\nuse_domain = 1\n", "config: registrar.use_domain: must be true or false, got 1"),
        ('[registrar]\nmin_expires_mode = "raise"\n',
         'config: registrar.min_expires_mode: must be one of "clamp", "reject", got "raise"'),
        ('[registrar]\npath_mode = "on"\n',
         'config: registrar.path_mode: must be one of "ignore", "off", "lazy", "strict", got "on"'),
        ("[registrar]\nmin_expires = 600\nmax_expires = 300\n",
         "config: registrar.min_expires: must be <= registrar.max_expires (300), got 600"),
        ("[registrar]\nflow_timer = -5\n", "config: registrar.flow_timer: must be an integer >= 0, got -5"),
        ("[registrar]\noutbound = \"yes\"\n", 'config: registrar.outbound: must be true or false, got "yes"'),
        ("[registrar]\nflow_timer = 600\n",
         "config: registrar.flow_timer: must be < limits.tcp_idle_timeout (600), got 600"),
        ("[timers]\nt1 = 0\n", "config: timers.t1: must be a number of seconds > 0, got 0"),
        ("[timers]\nt2 = inf\n", "config: timers.t2: must be a number of seconds > 0, got inf"),
        ('[timers]\ntimer_c = "2m"\n', 'config: timers.timer_c: must be a number of seconds > 0, got "2m"'),
        ("[timers]\nt1 = 5.0\n", "config: timers.t2: must be >= timers.t1 (5), got 4"),
        ("[proxy]\nno_reply_status = 200\n",
         "config: proxy.no_reply_status: must be an integer from 400 to 699, got 200"),
        ("[proxy]\nmax_forwards_default = 256\n",
         "config: proxy.max_forwards_default: must be an integer from 1 to 255, got 256"),
        ("[limits]\nmax_message_size = 100\n",
         "config: limits.max_message_size: must be an integer from 1024 to 16777216, got 100"),
        ("[limits]\nmax_line_length = 70000\n",
         "config: limits.max_line_length: must be <= limits.max_message_size (65535), got 70000"),
        ('[node]\nlisten = "udp:127.0.0.1:5060"\n',
         'config: node.listen: must be a non-empty list of "transport:host:port" strings, got "udp:127.0.0.1:5060"'),
        ("[node]\nlisten = []\n",
         'config: node.listen: must be a non-empty list of "transport:host:port" strings, got []'),
        ('[node]\nlisten = ["udp:127.0.0.1:5060", "sctp:127.0.0.1:5060"]\n',
         'config: node.listen[1]: transport must be one of udp, tcp, tls, ws, wss, got "sctp:127.0.0.1:5060"'),
        ('[node]\nlisten = ["udp:::1:5060"]\n',
         'config: node.listen[0]: must be "transport:host:port" (IPv6 host in brackets, e.g. "udp:[::1]:5060"),'
         ' got "udp:::1:5060"'),
        ('[node]\nlisten = ["udp:127.0.0.1:0"]\n',
         'config: node.listen[0]: port must be from 1 to 65535, got "udp:127.0.0.1:0"'),
        ('[node]\nlisten = ["udp:300.1.1.1:5060"]\n',
         'config: node.listen[0]: host must be an IPv4 address or an IPv6 address in brackets'
         ' (names are not resolved for listening), got "udp:300.1.1.1:5060"'),
        ('[node]\nlisten = ["udp:[::1]:5060", "UDP:[0:0::1]:5060"]\n',
         'config: node.listen[1]: listed twice: "UDP:[0:0::1]:5060"'),
        ('[node]\nadvertise = "my host"\n', 'config: node.advertise: must be a host name or IP address, got "my host"'),
        ('[node]\ndomains = "example.com"\n', 'config: node.domains: must be a list of domain names, got "example.com"'),
        ('[node]\ndomains = ["ok.example", "bad_domain!"]\n',
         'config: node.domains[1]: must be a domain name or IP address, got "bad_domain!"'),
        ('[node]\nlog_level = "loud"\n',
         'config: node.log_level: must be one of "debug", "info", "warn", "error", got "loud"'),
        ('[node]\nnode_id = "edge 1"\n',
         "config: node.node_id: must be 1-64 letters, digits, '.', '_' or '-', got \"edge 1\""),
        ('[node]\nroute = "my routes!"\n',
         'config: node.route: must be a .py file path or a dotted module name, got "my routes!"'),
        ('[regsitrar]\nmin_expires = 1\n', 'config: regsitrar: unknown section (did you mean "registrar"?)'),
        ("[registrar]\nmin_expire = 1\n",
         'config: registrar.min_expire: unknown key in [registrar] (did you mean "min_expires"?)'),
        ("[node]\nzzz = 1\n",
         "config: node.zzz: unknown key in [node] (expected one of advertise, domains, gc_full_interval, listen, log_format,"
         " log_level, node_id, route, state_dir)"),
        ("registrar = 5\n", "config: registrar: must be a table ([registrar]), got 5"),
        ('route_params = "x"\n', 'config: route_params: must be a table ([route_params]), got "x"'),
    ],
)
def test_error_names_the_key_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_missing_route_file_is_reported_with_its_resolved_path(tmp_path: Path) -> None:
    assert error_of(tmp_path, '[node]\nroute = "routes/mine.py"\n') == (
        f'config: node.route: no such file: "{tmp_path}/routes/mine.py"'
    )


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"^config: {re.escape(str(missing))}: no such file$"):
        load_config(str(missing))
    message = error_of(tmp_path, "[node\n")
    assert message.startswith(f"config: {tmp_path}/edgeproxy.toml: not valid TOML: ")
    assert "line 1" in message
    (tmp_path / "latin1.toml").write_bytes(b'[node]\nnode_id = "\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(tmp_path / "latin1.toml"))


def test_long_values_are_shortened_to_keep_one_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, f'[node]\nadvertise = "{"x" * 300}"\n')
    assert len(message) < 160 and message.endswith('xxx...')
    assert error_of(tmp_path, '[node]\nadvertise = "a\\nb"\n').endswith('got "a\\nb"')


# -- command-line overrides -----------------------------------------------------------------------


def test_overrides_replace_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nlisten = ["udp:127.0.0.1:5060"]\nlog_level = "debug"\n')
    config = load_config(path, {"node.listen": ["tcp:127.0.0.1:5070", "udp:127.0.0.1:5070"], "node.log_level": "error"})
    assert config.node.listen == ("tcp:127.0.0.1:5070", "udp:127.0.0.1:5070")
    assert config.node.log_level == "error"


def test_override_errors_say_they_came_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"node.listen": ["udp:127.0.0.1:5060", "tcp:nowhere"]})
    assert str(info.value).startswith("config: node.listen[1] (command line): must be \"transport:host:port\"")
    with pytest.raises(ConfigError, match=r'^config: node.lsten \(command line\): unknown key in \[node\] '
                                          r'\(did you mean "listen"\?\)$'):
        load_config(None, {"node.lsten": []})


def test_relative_route_resolves_against_the_config_file_or_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "r.py").write_text("def request_route(msg): pass\n")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "r.py").write_text("def request_route(msg): pass\n")
    monkeypatch.chdir(tmp_path / "cwd")
    path = write(tmp_path / "etc", '[node]\nroute = "r.py"\n')
    assert load_config(path).node.route == str(tmp_path / "etc" / "r.py")
    assert load_config(path, {"node.route": "r.py"}).node.route == str(tmp_path / "cwd" / "r.py")
    assert load_config(path, {"node.route": "edgeproxy_routes.default"}).node.route == "edgeproxy_routes.default"


# -- twistd edgeproxy: Options and makeService ----------------------------------------------------


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_options_without_arguments_give_the_default_node() -> None:
    assert parse().config == load_config(None)


def test_options_override_the_config_file(tmp_path: Path) -> None:
    route = tmp_path / "r.py"
    route.write_text("def request_route(msg):\n    msg.sl_send_reply(404, 'Not Found')\n")
    path = write(tmp_path, '[node]\nlisten = ["udp:127.0.0.1:5999"]\n[registrar]\nmin_expires = 10\n')
    options = parse("-c", path, "-l", "udp:127.0.0.1:5070", "--listen", "tcp:[::1]:5070", "-r", str(route),
                    "--log-level", "debug")
    assert options.config is not None
    assert options.config.node.listen == ("udp:127.0.0.1:5070", "tcp:[::1]:5070")
    assert options.config.node.route == str(route)
    assert options.config.node.log_level == "debug"
    assert options.config.registrar.min_expires == 10


def test_bad_config_is_a_one_line_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[registrar]\nmin_expires = "abc"\n')
    with pytest.raises(usage.UsageError) as info:
        parse("--config", path)
    assert str(info.value) == 'config: registrar.min_expires: must be an integer >= 0, got "abc"'


def test_route_module_is_loaded_when_options_are_checked(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def request_route():\n    pass\n")
    with pytest.raises(usage.UsageError, match=r"^config: node.route: route module .*request_route"):
        parse("--route", str(broken))
    with pytest.raises(usage.UsageError, match=r"^config: node.route: "):
        parse("--route", "edgeproxy.no_such_module")


def test_make_service_hands_the_config_to_service_make_service(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeproxy.service

    seen: list[Config] = []
    marker = object()
    monkeypatch.setattr(edgeproxy.service, "make_service", lambda config: seen.append(config) or marker)
    options = parse("-l", "udp:127.0.0.1:5071")
    assert tap.makeService(options) is marker
    assert seen == [options.config]


def test_log_level_filters_twistds_observer(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(tap, "_twistd_log", None)
    server_options: dict[str, Any] = {"logger": None, "logfile": "-", "nodaemon": True, "syslog": False}
    tap._filter_twistd_logging(server_options, "warn")
    assert server_options["logger"] == "edgeproxy.tap._filtered_observer"
    observer = tap._filtered_observer()
    for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
        observer({"log_level": level, "log_format": f"{level.name} event", "log_namespace": "edgeproxy.test",
                  "log_time": time.time(), "log_system": "-"})
    out = capsys.readouterr().out
    assert "debug event" not in out and "info event" not in out
    assert "warn event" in out and "error event" in out


def test_log_level_leaves_an_explicit_logger_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap, "_twistd_log", None)
    server_options: dict[str, Any] = {"logger": "my.logger.factory"}
    tap._filter_twistd_logging(server_options, "error")
    assert server_options["logger"] == "my.logger.factory"


def test_plugin_is_a_thin_service_maker() -> None:
    sys.path.insert(0, str(REPO / "twisted" / "plugins"))
    try:
        import edgeproxy_plugin
    finally:
        sys.path.remove(str(REPO / "twisted" / "plugins"))
    maker = edgeproxy_plugin.edgeproxy
    assert (maker.tapname, maker.module, maker.description) == ("edgeproxy", "edgeproxy.tap", "SIP edge proxy")
    assert maker.options is tap.Options


# -- the real twistd, as an operator runs it ------------------------------------------------------


def twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    script = Path(sys.executable).with_name("twistd")
    argv = [str(script)] if script.exists() else [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return subprocess.run(argv + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_twistd_lists_the_plugin_and_its_options(tmp_path: Path) -> None:
    listing = twistd("--help", cwd=tmp_path)
    assert re.search(r"^\s+edgeproxy\s+SIP edge proxy$", listing.stdout, re.M), listing.stdout
    help_text = twistd("edgeproxy", "--help", cwd=tmp_path)
    assert help_text.returncode == 0
    for option in ("--config=", "--listen=", "--route=", "--log-level="):
        assert option in help_text.stdout


def test_twistd_refuses_a_bad_config_with_one_line_and_status_1(tmp_path: Path) -> None:
    path = write(tmp_path, '[registrar]\nmin_expires = "abc"\n')
    result = twistd("-n", "--pidfile=", "edgeproxy", "--config", path, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == 'config: registrar.min_expires: must be an integer >= 0, got "abc"\n'


def test_twistd_edgeproxy_version_is_edgeproxys(tmp_path: Path) -> None:
    import twisted

    from edgeproxy import __version__

    result = twistd("edgeproxy", "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"edgeproxy {__version__} (Twisted {twisted.__version__}, Python "), result.stdout


@pytest.mark.parametrize("value, level", [(4, "debug"), (3, "info"), (2, "info"), (1, "warn"), (0, "error"),
                                          (-1, "error"), (-3, "error"), ("debug", "debug")])
def test_log_level_takes_opensips_numbers_in_the_file(tmp_path: Path, value: object, level: str) -> None:
    text = f"[node]\nlog_level = {value}\n" if isinstance(value, int) else f'[node]\nlog_level = "{value}"\n'
    assert load_config(write(tmp_path, text)).node.log_level == level


def test_log_level_number_on_the_command_line_and_out_of_range(tmp_path: Path) -> None:
    assert load_config(None, {"node.log_level": "4"}).node.log_level == "debug"
    assert error_of(tmp_path, "[node]\nlog_level = 5\n") == (
        "config: node.log_level: must be an OpenSIPS level from -4 to 4 or one of debug, info, warn, error, got 5")
    assert error_of(tmp_path, "[node]\nlog_level = true\n").startswith("config: node.log_level: must be one of")


def test_twistd_finds_a_dotted_route_in_the_current_directory(tmp_path: Path) -> None:
    """``twistd -n edgeproxy -r blocklist`` beside blocklist.py: the twistd script puts its own directory
    on sys.path, not the current one; the loader looks there too. A bad module is still one line."""
    (tmp_path / "blocklist.py").write_text("from edgeproxy_routes.default import request_route  # noqa: F401\n")
    (tmp_path / "broken.py").write_text("def request_route():\n    pass\n")
    from support.ports import free_port

    port = free_port()
    script = ("import sys; from twisted.scripts.twistd import run; from twisted.internet import reactor;"
              " reactor.callLater(1.5, reactor.stop); sys.argv[0] = 'twistd'; run()")
    # -I: no current directory on sys.path, as under the twistd script; the checkout is found by its .pth
    started = subprocess.run([sys.executable, "-I", "-c", script, "-n", "--pidfile=", "edgeproxy", "-r", "blocklist",
                              "-l", f"udp:127.0.0.1:{port}"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
    assert "edgeproxy listening on udp:127.0.0.1:" in started.stdout + started.stderr, started.stdout + started.stderr
    assert "route blocklist" in started.stdout + started.stderr
    bad = twistd("-n", "--pidfile=", "edgeproxy", "-r", "broken", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("config: node.route: route module 'broken':"), bad.stderr
