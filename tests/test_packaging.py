"""What ``pip install .`` puts in site-packages: ``edgeproxy``, the shipped routes as
``edgeproxy_routes`` (never a top-level ``routes``, which is the Routes library's) and the twistd
plugin. setuptools' own ``build_py`` -- the step a wheel is made from -- builds the tree here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _build(tmp_path: Path) -> Path:
    out = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py", "--build-lib", str(out)],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )
    return out


def test_installed_top_level_names(tmp_path: Path) -> None:
    lib = _build(tmp_path)
    assert sorted(p.name for p in lib.iterdir()) == ["edgeproxy", "edgeproxy_routes", "twisted"]
    shipped = sorted(p.name for p in (lib / "edgeproxy_routes").glob("*.py"))
    assert shipped == sorted(p.name for p in (REPO / "routes").glob("*.py"))
    assert not (lib / "edgeproxy_routes").is_symlink()  # files, as a wheel holds them
    assert (lib / "twisted" / "plugins" / "edgeproxy_plugin.py").is_file()


def test_built_routes_load_from_the_built_tree(tmp_path: Path) -> None:
    """The default route name resolves to the installed package, whose modules import each other
    by that name (no reference to ``routes`` is left)."""
    lib = _build(tmp_path)
    code = (
        "import sys\n"
        f"sys.path[:] = [{str(lib)!r}] + [p for p in sys.path if p and os.path.realpath(p) != {str(REPO)!r}]\n"
        "from edgeproxy.routing.loader import load_route_module\n"
        "for name in ('', 'edgeproxy_routes.federated', 'edgeproxy_routes.redirect', 'edgeproxy_routes.failover'):\n"
        "    print(load_route_module(name).module.__file__)\n"
        "print('routes' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", "import os\n" + code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    lines = run.stdout.split()
    assert lines[-1] == "False"
    assert [Path(f).parent for f in lines[:-1]] == [lib / "edgeproxy_routes"] * 4


def test_ci_prepares_the_machine_with_the_script_developers_run() -> None:
    """README's "Developer machine" and .ci/run are one script, so they cannot drift apart."""
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/prepare-dev.sh" in ci
    assert "bash scripts/prepare-dev.sh" in (REPO / "README.md").read_text()
    script = REPO / "scripts" / "prepare-dev.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    for need in ("sip-tester", "sipsak", "baresip-core", "nodejs", "npm ci", "mariadb-server", "python3-venv",
                 "'root'@'127.0.0.1'"):
        assert need in text, need
    # .ci/run installs the Debian packages itself on a fresh machine: the same ones the script names
    listed = re.search(r'^DEBIAN_PACKAGES="([^"]+)"$', ci, re.M)
    assert listed is not None
    ci_packages = set(listed.group(1).split())
    assert {"sip-tester", "sipsak", "baresip-core", "nodejs", "npm", "mariadb-server", "python3-venv"} <= ci_packages
    script_packages = set(re.findall(r"\b(python3-venv|sip-tester|sipsak|baresip-core|nodejs|npm|iproute2|nftables|"
                                     r"prometheus|mariadb-server)\b(?![-\w])", text.replace("npm ci", "")))
    assert script_packages == ci_packages, script_packages ^ ci_packages
