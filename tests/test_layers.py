"""Layering: the SIP core (``edgeproxy.sip``), the transaction layer (``edgeproxy.transaction``) and the
RFC 3263 location procedure (``edgeproxy.dns``) are sans-IO. They must not import Twisted at all (not even ``twisted.internet``, whose import installs a
reactor) so they run, and are tested, without an event loop, and stay reusable under another one.

Checked twice: statically, by walking every module's AST (any ``import``/``from ... import``,
including ones inside functions or ``TYPE_CHECKING`` blocks, and ``importlib``/``__import__`` calls
with a literal name), and dynamically, by importing the packages in a fresh interpreter and looking at
``sys.modules``. The SIP core additionally imports nothing from the rest of edgeproxy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SANS_IO = ["edgeproxy/sip", "edgeproxy/transaction", "edgeproxy/dns"]
# Packages above the transaction layer (transaction users, I/O, configuration) that neither sans-IO
# package may reach into.
UPPER = ("transport", "proxy", "registrar", "location", "routing", "service", "config", "tap")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``; relative imports resolved."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    pkg_parts = list(path.relative_to(root).with_suffix("").parts)[:-1]  # the containing package
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    out.append((node.lineno, arg.value))
    return out


def _is_twisted(name: str) -> bool:
    return name == "twisted" or name.startswith("twisted.")


@pytest.mark.parametrize("package", SANS_IO)
def test_no_twisted_import_anywhere(package: str) -> None:
    files = _modules(package)
    if not files:
        pytest.skip(f"{package} has no modules yet")
    bad = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in files for line, name in _imports(p) if _is_twisted(name)]
    assert not bad, "sans-IO layer imports Twisted:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", SANS_IO)
def test_no_upper_layer_import(package: str) -> None:
    bad = []
    for p in _modules(package):
        for line, name in _imports(p):
            parts = name.split(".")
            if parts[0] == "edgeproxy" and len(parts) > 1 and parts[1] in UPPER:
                bad.append(f"{p.relative_to(ROOT)}:{line}: {name}")
    assert not bad, "sans-IO layer reaches up:\n" + "\n".join(bad)


def test_sip_core_is_self_contained() -> None:
    bad = []
    for p in _modules("edgeproxy/sip"):
        for line, name in _imports(p):
            parts = name.split(".")
            if parts[0] == "edgeproxy" and parts[1:2] != ["sip"]:
                bad.append(f"{p.relative_to(ROOT)}:{line}: {name}")
    assert not bad, "edgeproxy.sip imports other edgeproxy packages:\n" + "\n".join(bad)


def test_import_in_fresh_interpreter_loads_no_twisted() -> None:
    packages = [p.replace("/", ".") for p in SANS_IO if (ROOT / p / "__init__.py").exists()]
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in SANS_IO for path in _modules(p)
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {sorted(set(packages + modules))!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'twisted' or m.startswith('twisted.'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing the sans-IO layers loaded: {result.stdout.strip()}"


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    """The AST walk finds imports hidden in functions, TYPE_CHECKING blocks and importlib calls."""
    probe = ROOT / "edgeproxy" / "sip" / "__init__.py"
    names = {n for _, n in _imports(probe)}
    assert "edgeproxy.sip.errors" in names  # relative imports resolved
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from twisted.internet import reactor\n"
        "def f():\n    import twisted.python.log\n"
        "importlib.import_module('twisted.web')\n"
    )
    fake = tmp_path / "edgeproxy" / "sip" / "probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(src + "from ..transport import udp\n")
    found = {n for _, n in _imports(fake, tmp_path)}
    assert {"twisted.internet", "twisted.python.log", "twisted.web"} <= found
    assert "edgeproxy.transport" in found
