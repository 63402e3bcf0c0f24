#!/usr/bin/env bash
# Prepares a Debian/Ubuntu machine for edgeproxy's test suite: everything the tests use besides
# Python packages (those come with `pip install '.[test]'`). .ci/run runs this same script first, so
# a developer machine and CI cannot drift apart. Safe to run again: it installs only what is missing.
#
#   bash scripts/prepare-dev.sh        # as root, or as a user who may sudo
#
# What it sets up:
#   * python3-venv (Debian's Python needs it for `python3 -m venv`)
#   * SIPp (sip-tester), sipsak and baresip: the independent SIP peers of the end-to-end tests
#   * iproute2 and nftables: the NAT test builds network namespaces with a masquerading router
#   * Node.js and npm, then `npm ci` in tests/webrtc (JsSIP, SIP.js) and bench/wss (the ws client)
#   * Prometheus (Debian's package; the metrics test starts its own on loopback)
#   * MariaDB on 127.0.0.1:3306, user root with an empty password over TCP, database `test`
set -euo pipefail

cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian's and Ubuntu's python3 makes virtual environments only with python3-venv installed
if ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y python3-venv; then
        as_root apt-get update
        as_root apt-get install -y python3-venv
    fi
fi

if ! command -v sipp >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # the package lists may be missing or stale on a fresh image: update only when needed
    if ! as_root apt-get install -y sip-tester; then
        as_root apt-get update
        as_root apt-get install -y sip-tester
    fi
fi
echo "using SIPp at $(command -v sipp)"

# third-party clients of the end-to-end tests: Node.js runs JsSIP and SIP.js (tests/webrtc, exact
# versions from its package-lock.json), sipsak and baresip are the TLS phones
need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v sipsak >/dev/null 2>&1 || need+=(sipsak)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
# a real NAT between network namespaces (tests/test_e2e_nat_netns.py): ip netns and nftables masquerade
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y "${need[@]}"; then
        as_root apt-get update
        as_root apt-get install -y "${need[@]}"
    fi
fi
# a real Prometheus server scrapes a node in tests/test_e2e_metrics.py (Debian's package; the test
# starts its own on loopback, so the packaged service is not needed)
if ! command -v prometheus >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends prometheus; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends prometheus
    fi
fi
echo "using Node.js $(node --version) at $(command -v node)"
(cd tests/webrtc && npm ci --no-audit --no-fund)
# the WSS load client of bench/wss_load.py (ws, locked in bench/wss/package-lock.json); its smoke test
# runs under CI=true
(cd bench/wss && npm ci --no-audit --no-fund)

# MariaDB holds the clusterer node table in the cluster tests (root, empty password, 127.0.0.1:3306)
if ! mysqladmin -uroot -h127.0.0.1 ping >/dev/null 2>&1; then
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        as_root apt-get update
        as_root apt-get install -y mariadb-server
    fi
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 30); do
        mysqladmin -uroot -h127.0.0.1 ping >/dev/null 2>&1 && break
        sleep 1
    done
    # a fresh mariadb-server lets root in over the Unix socket only; the tests connect over TCP
    as_root mysql -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE IF NOT EXISTS test;" || true
fi
mysqladmin -uroot -h127.0.0.1 ping

