"""The federated scenario of bench/load.py (issue 5): a store and two nodes started with the
configurations of bench/federated/, the direct and federated call ladders and their comparison."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from processes import Children, Proxy, Store
from procfs import BENCH_DIR, free_port_on, log
from sipp_ladder import Bench, Topology, fmt, parse_rates, toml_dumps

# --------------------------------------------------------------------------- the federated scenario

FED_DIR = BENCH_DIR / "federated"
#: issue 5's targets: federated calls/s >= this x the direct-call rate; store round-trips per call
TARGET_FED_RATIO = 0.5
TARGET_STORE_RT = 1.0


def _python_tool(name: str) -> str | None:
    """A console script of the interpreter running this script (not a pyenv shim first on PATH)."""
    sibling = Path(sys.executable).with_name(name)
    return str(sibling) if sibling.exists() else shutil.which(name)


def _host_of(spec: str) -> tuple[str, str, int]:
    """``udp:127.0.0.11:5060`` -> ("udp", "127.0.0.11", 5060)."""
    proto, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    return proto, host.strip("[]"), int(port)


def fed_node_config(src: Path, sip_port: int, bin_port: int, cachedb_url: str) -> dict[str, Any]:
    """A node configuration from ``bench/federated/<file>``: the listeners and the rows' ``url`` /
    ``sip_addr`` moved to the ports of this run, ``cachedb_url`` pointing at this run's store, the route
    path made absolute. Anything else as written."""
    import tomllib

    doc = tomllib.loads(src.read_text())
    node = doc.setdefault("node", {})
    node["listen"] = [f"{proto}:{host}:{sip_port}" for proto, host, _ in map(_host_of, node.get("listen", []))]
    route = node.get("route", "")
    if route and route.endswith(".py") and not os.path.isabs(route):
        node["route"] = str((src.parent / route).resolve())
    for row in doc.get("cluster", {}).get("nodes", []):
        ip = row["url"].split(":")[1]
        row["url"] = f"bin:{ip}:{bin_port}"
        host = str(row.get("sip_addr") or ip)
        if host.count(":") == 1:  # host:port (IPv4 or a name): keep the host
            host = host.split(":")[0]
        row["sip_addr"] = host if sip_port == 5060 else f"{host}:{sip_port}"
    fed = doc.setdefault("federation", {})
    # the file's query options (say ?minPoolSize=20) are kept, the store's (replicaSet=...) added
    file_query = str(fed.get("cachedb_url", "")).partition("?")[2]
    base, _, query = cachedb_url.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    options.update(parse_qsl(file_query, keep_blank_values=True))
    fed["cachedb_url"] = base + ("?" + urlencode(options) if options else "")
    return doc


def start_federated(a: argparse.Namespace, outdir: Path, children: Children) -> Topology:
    """Store, then nodes X (home) and Y (non-home): the topology of the ``federated`` scenario."""
    cfg_dir = Path(a.fed_config_dir)
    srcs = {"x": cfg_dir / "node-x.toml", "y": cfg_dir / "node-y.toml"}
    import tomllib

    raw = {name: tomllib.loads(p.read_text()) for name, p in srcs.items()}
    ips = {name: _host_of(doc["node"]["listen"][0])[1] for name, doc in raw.items()}
    for name, ip in ips.items():
        if not ip.startswith("127."):
            raise SystemExit(f"{srcs[name]}: node {name} must listen on loopback, got {ip}")
    freeswitch = raw["y"].get("route_params", {}).get("freeswitch") or []
    if not freeswitch or freeswitch != raw["x"].get("route_params", {}).get("freeswitch"):
        raise SystemExit(f"{cfg_dir}: both nodes need the same route_params.freeswitch (the bench UAC's address)")
    uac_ip = str(freeswitch[0]).split(":")[0]  # the bench binds IPv4 loopback addresses
    domains = raw["x"]["node"].get("domains") or []
    if not domains:
        raise SystemExit(f"{srcs['x']}: node.domains must name the users' domain")
    for ip in (uac_ip, a.fed_phone_ip):
        if not ip.startswith("127."):
            raise SystemExit(f"the bench only binds loopback addresses, got {ip}")

    node_ips = [ips["x"], ips["y"]]
    sip_port = a.fed_sip_port or free_port_on(node_ips, 0, 5060)
    bin_port = a.fed_bin_port or free_port_on(node_ips, socket.SOCK_STREAM, 5555 if sip_port != 5555 else 5556)
    log(f"federated: X {ips['x']}:{sip_port}, Y {ips['y']}:{sip_port}, cluster link port {bin_port}, "
        f"FreeSWITCH (UAC) {uac_ip}:{a.uac_port}, phones (UAS) {a.fed_phone_ip}:{a.uas_port}, domain {domains[0]}")

    store = Store(children, outdir, f"edgeproxy_bench_{os.getpid()}", "userlocation")
    if a.store_url:
        store.attach(a.store_url)
    else:
        exe = a.store_cmd or _python_tool("secantusd-py")
        if not exe:
            raise SystemExit("secantusd-py not found (pip install secantusdb) and no --store-url given")
        store.start(exe, a.start_timeout)

    twistd = _python_tool("twistd") or "twistd"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR.parent)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    nodes: dict[str, Proxy] = {}
    for name in ("x", "y"):
        cfg = outdir / f"node-{name}.toml"
        cfg.write_text(f"# generated by bench/load.py from {srcs[name]}\n\n"
                       + toml_dumps(fed_node_config(srcs[name], sip_port, bin_port, store.cachedb_url())))
        node = Proxy(ips[name], sip_port, a.transport, children, outdir, name=name, env=env, probe_max_forwards=0)
        nodes[name] = node
        node.start(f"{shlex.quote(twistd)} -n --pidfile= edgeproxy --config {shlex.quote(str(cfg))}", a.start_timeout)
    return Topology(nodes=nodes, entry={"direct": "x", "federated": "y"}, home="x", uac_ip=uac_ip,
                    uas_ip=a.fed_phone_ip, domain=domains[0], store=store)


def run_federated(a: argparse.Namespace, bench: Bench, ladders: list[str]) -> dict[str, Any]:
    """Preload the users on X, check the path, run the ladders, compare them."""
    topo = bench.topo
    assert topo.store is not None
    if not bench.bulk_register("preload", "u", a.users, a.preload_rate):
        raise SystemExit("preload registration failed: the federated scenario needs every user registered on X")
    home_ip = fed_sip_addr(topo.nodes["x"])
    deadline = time.monotonic() + 60
    n = -1
    while time.monotonic() < deadline:
        n = topo.store.count_homes(home_ip)
        if n >= a.users:
            break
        time.sleep(0.5)
    log(f"store: {n} records with home_ip {home_ip} (want {a.users})")
    if n < a.users:
        raise SystemExit("X did not publish every user to the store within 60 s")
    for scenario in ladders:
        if not bench.smoke(scenario):
            raise SystemExit(f"smoke calls ({scenario}) did not all succeed: see {bench.outdir}/smoke-{scenario}-*")
    time.sleep(1)
    maxes = {}
    for scenario in ladders:
        maxes[scenario] = bench.ladder(scenario, parse_rates(a.call_rates))
    return compare(bench, maxes)


def fed_sip_addr(node: Proxy) -> str:
    return node.host if node.port == 5060 else f"{node.host}:{node.port}"


def compare(bench: Bench, maxes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One COMPARE line per rate (direct vs federated), a FEDERATED verdict and a Markdown table."""
    steps: dict[tuple[str, int], dict[str, Any]] = {}
    for res in bench.results:
        if res.get("kind") == "step" and res["scenario"] in ("direct", "federated"):
            steps[(res["scenario"], res["rate"])] = res  # the last attempt of a repeated (noisy) step
    rates = sorted({rate for _, rate in steps})
    cols = [("achieved", "achieved"), ("p99_ms", "rtt_ms_p99"), ("pass", "pass"), ("noisy", "noisy"),
            ("x_cpu_us", "x_cpu_us_per_op"), ("y_cpu_us", "y_cpu_us_per_op"), ("store_cpu_us", "store_cpu_us_per_op"),
            ("find_per_call", "store_find_per_call"), ("find_per_ok_call", "store_find_per_ok_call"),
            ("stall_ms_x", "stall_ms_x"), ("stall_ms_y", "stall_ms_y"), ("stall_ms_store", "stall_ms_store"),
            ("failed_checks", "failed_checks")]
    header = ("| offered calls/s | direct: calls/s | p99 INVITE→200 ms | µs CPU X / Y / store per call | store finds/call "
              "| federated: calls/s | p99 INVITE→200 ms | µs CPU X / Y / store per call | store finds/call |")
    table = [header, "|---|---|---|---|---|---|---|---|---|"]
    for rate in rates:
        line: dict[str, Any] = {"rate": rate}
        cells = [str(rate)]
        for scen in ("direct", "federated"):
            r = steps.get((scen, rate))
            for short, key in cols:
                line[f"{scen}_{short}"] = r.get(key) if r else None
            if r is None:
                cells += ["—"] * 4
                continue
            mark = "" if r["pass"] else f" ✗ {r['failed_checks']}"
            mark += " (noisy)" if r["noisy"] else ""
            mark += " (store stall)" if r.get("store_stall") else ""
            cells += [f"{fmt(r['achieved'])}{mark}", fmt(r["rtt_ms_p99"]),
                      " / ".join(fmt(r.get(k)) for k in ("x_cpu_us_per_op", "y_cpu_us_per_op", "store_cpu_us_per_op")),
                      fmt(r.get("store_find_per_call"), "store_find_per_call")]
        bench.emit("COMPARE " + " ".join(f"{k}={fmt(v, k)}" for k, v in line.items()))
        table.append("| " + " | ".join(cells) + " |")
    md, fd = maxes.get("direct", {}), maxes.get("federated", {})
    v: dict[str, Any] = {
        "max_direct": md.get("max_pass_rate"), "direct_first_fail": md.get("first_fail_rate"),
        "max_federated": fd.get("max_pass_rate"), "federated_first_fail": fd.get("first_fail_rate"),
    }
    v["ratio"] = round(v["max_federated"] / v["max_direct"], 2) if v["max_federated"] is not None and v["max_direct"] else None
    # the ratio is exact only when the direct ladder found its limit
    v["ratio_bound"] = "exact" if md.get("first_fail_rate") else "direct_not_saturated"
    v["ratio_ok"] = int(v["ratio"] is not None and v["ratio"] >= TARGET_FED_RATIO)
    # store round-trips per call, over the passing steps (every call completed: per call placed and
    # per successful call are then the same)
    def finds_of(scen: str) -> list[float]:
        return [r["store_find_per_call"] for (s, _), r in steps.items()
                if s == scen and r["pass"] and r.get("store_find_per_call") is not None]

    finds, direct_finds = finds_of("federated"), finds_of("direct")
    v["store_find_per_call_min"] = min(finds) if finds else None
    v["store_find_per_call_max"] = max(finds) if finds else None
    v["direct_store_find_per_call_max"] = max(direct_finds) if direct_finds else None
    v["store_rt_ok"] = int(bool(finds) and all(abs(f - TARGET_STORE_RT) < 0.005 for f in finds))
    v["target_ratio"] = TARGET_FED_RATIO
    v["noisy_steps"] = sum(m.get("noisy_steps", 0) for m in maxes.values())
    v["store_stall_steps"] = sum(m.get("store_stall_steps", 0) for m in maxes.values())
    bench.emit("FEDERATED " + " ".join(f"{k}={fmt(x, k)}" for k, x in v.items()))
    for row in table:
        bench.emit(row)
    return v

