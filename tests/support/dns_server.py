"""An authoritative DNS server for tests: ``twisted.names.server`` over an in-memory zone.

Two ways to run it:

* in the test's reactor (pytest-twisted): ``listen_dns(zone)`` returns the bound port;
* as a subprocess, for synchronous end-to-end tests whose reactor does not run while they wait
  (SIPp): ``with dns_server_process(zone) as port: ...`` writes the zone as JSON and runs this file.

A zone is ``{"origin": "carrier.test", "records": {name: [record, ...]}}`` where a record is a list:
``["A", "127.0.0.1"]``, ``["AAAA", "::1"]``, ``["SRV", priority, weight, port, target]``,
``["NAPTR", order, preference, flags, service, regexp, replacement]``, optionally followed by a TTL.
Names under the origin that are not listed get NXDOMAIN; listed names without the asked type get an
empty answer with the zone's SOA (RFC 2308), as a real authoritative server does. Loopback only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

DEFAULT_TTL = 60
NEGATIVE_TTL = 30


def _authority(zone: Mapping[str, Any]) -> Any:
    from twisted.names import authority, common, dns

    origin = zone["origin"].lower().encode()

    def record(spec: list[Any]) -> Any:
        kind, *args = spec
        fields = {"A": 1, "AAAA": 1, "SRV": 4, "NAPTR": 6}[kind]
        ttl = args[fields] if len(args) > fields else DEFAULT_TTL
        args = args[:fields]
        if kind == "A":
            return dns.Record_A(args[0], ttl=ttl)
        if kind == "AAAA":
            return dns.Record_AAAA(args[0], ttl=ttl)
        if kind == "SRV":
            return dns.Record_SRV(args[0], args[1], args[2], args[3].encode(), ttl=ttl)
        return dns.Record_NAPTR(args[0], args[1], args[2].encode(), args[3].encode(), args[4].encode(),
                                args[5].encode(), ttl=ttl)

    class ZoneAuthority(authority.FileAuthority):
        def __init__(self) -> None:
            common.ResolverBase.__init__(self)
            self._cache = {}
            soa = dns.Record_SOA(mname=b"ns." + origin, rname=b"hostmaster." + origin, serial=1, refresh=3600,
                                 retry=600, expire=NEGATIVE_TTL, minimum=NEGATIVE_TTL, ttl=NEGATIVE_TTL)
            self.soa = (origin, soa)
            self.records = {origin: [soa]}
            for name, specs in zone["records"].items():
                self.records.setdefault(name.lower().encode(), []).extend(record(s) for s in specs)

    return ZoneAuthority()


def listen_dns(zone: Mapping[str, Any], port: int = 0, host: str = "127.0.0.1", reactor: Any = None) -> tuple[int, list[Any]]:
    """Serve ``zone`` on UDP and TCP ``host:port`` in the running reactor; returns the port and the
    listening ports (to ``stopListening``)."""
    from twisted.internet.error import CannotListenError
    from twisted.names import dns, server

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    zone_authority = _authority(zone)

    class Factory(server.DNSServerFactory):
        def gotResolverError(self, failure: Any, protocol: Any, message: Any, address: Any) -> None:
            """NXDOMAIN with the zone's SOA in the authority section, as real servers answer (RFC
            2308 §3), so the negative answer can be cached for its TTL."""
            if not failure.check(dns.DomainError, dns.AuthoritativeDomainError):
                return super().gotResolverError(failure, protocol, message, address)
            origin, soa = zone_authority.soa
            authority = [dns.RRHeader(origin, dns.SOA, dns.IN, soa.ttl, soa, auth=True)]
            self.sendReply(protocol, self._responseFromMessage(message=message, rCode=dns.ENAME, authority=authority),
                           address)

    factory = Factory(authorities=[zone_authority], verbose=0)
    for attempt in range(50):  # port 0: the kernel's UDP port may be taken for TCP; draw again
        udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(controller=factory), interface=host)
        bound = udp.getHost().port
        try:
            tcp = reactor.listenTCP(bound, factory, interface=host)
        except CannotListenError:
            udp.stopListening()
            if port or attempt == 49:
                raise
            continue
        return bound, [udp, tcp]
    raise AssertionError("unreachable")


@contextmanager
def dns_server_process(zone: Mapping[str, Any], workdir: Path, host: str = "127.0.0.1",
                       startup_timeout: float = 10.0) -> Iterator[int]:
    """Run the server in a subprocess for the ``with`` block; yields its port (UDP and TCP)."""
    zone_path = workdir / "zone.json"
    zone_path.write_text(json.dumps(zone), encoding="utf-8")
    ready = workdir / "dns.port"
    ready.unlink(missing_ok=True)
    log = open(workdir / "dns.log", "wb")
    proc = subprocess.Popen([sys.executable, str(Path(__file__)), str(zone_path), host, str(ready)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while not (ready.exists() and ready.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test DNS server did not start: {(workdir / 'dns.log').read_text()}")
            time.sleep(0.05)
        yield int(ready.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main(argv: list[str]) -> None:
    zone_path, host, ready = argv
    from twisted.internet import reactor

    zone = json.loads(Path(zone_path).read_text(encoding="utf-8"))
    port, _ = listen_dns(zone, 0, host, reactor)
    tmp = ready + ".tmp"
    Path(tmp).write_text(str(port))
    os.replace(tmp, ready)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
