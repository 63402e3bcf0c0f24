"""Layering: every module of edgeproxy has a layer, and imports only from its own layer or below.

The layers, lowest first (:data:`LAYERS`):

0. **foundation** -- the SIP core (``edgeproxy.sip``, which imports nothing else of edgeproxy), the
   package root, and the pure configuration vocabulary every package's ``settings.py`` uses
   (``config_error``, ``config_schema``).
1. **sans-IO** -- the transaction layer (``edgeproxy.transaction``) and the RFC 3263 location
   procedure (``edgeproxy.dns``).
2. **contract** -- ``edgeproxy.interfaces``: what transports and the layers above agree on.
3-6. **behaviour**, in four steps:

   3. **services** -- registrar, location, cluster, federation, auth, and the small shared modules
      (``coroutine``, ``sqldb``);
   4. **proxy core** -- ``edgeproxy.proxy``: the transaction-stateful proxy, which knows no route
      module (it asks :class:`~edgeproxy.proxy.hooks.RouteHooks`);
   5. **routing** -- ``edgeproxy.routing``: the route verbs, ``msg``, the loader and the harness;
   6. **node** -- ``edgeproxy.node``: receives messages and runs route modules.
7. **glue** -- Twisted glue: transports, the MI (``management``), ``service``, and the ``[node]``
   settings (``node_settings``, which parses listen specs with the transports).
8. **loader** -- ``config``.
9. **tap** -- ``edgeproxy.tap``.
10. **plugin** -- ``twisted/plugins/edgeproxy_plugin.py``.

Checked statically, by walking every module's AST (any ``import``/``from ... import``, including ones
inside functions or ``TYPE_CHECKING`` blocks, and ``importlib``/``__import__`` calls with a literal
name):

* a module not in the map fails (a new module must be placed);
* no module imports from a higher layer;
* the sans-IO layers (and the SIP core) import no Twisted at all (not even ``twisted.internet``, whose
  import installs a reactor), so they run, and are tested, without an event loop; ``interfaces`` only
  under ``TYPE_CHECKING``;
* no module imports another module's private names: ``from x import _y``, ``import x._y``, or
  ``mod._name`` on an imported module object. A private *module* (``transport/_util.py``) may be
  used inside its own package.

And dynamically, by importing the sans-IO packages and ``interfaces`` in a fresh interpreter and
looking at ``sys.modules``.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "twisted/plugins/edgeproxy_plugin.py"

#: (layer name, the modules or packages in it); a package covers its submodules.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("edgeproxy", "edgeproxy.sip", "edgeproxy.config_error", "edgeproxy.config_schema")),
    ("sans-IO", ("edgeproxy.transaction", "edgeproxy.dns")),
    ("contract", ("edgeproxy.interfaces",)),
    # behaviour, in four steps: the services a node uses; the transaction-stateful proxy core, which
    # knows no route module; the route verbs and API over that core; the node that runs route modules
    ("services", ("edgeproxy.registrar", "edgeproxy.location", "edgeproxy.cluster", "edgeproxy.federation",
                  "edgeproxy.auth", "edgeproxy.dispatcher", "edgeproxy.permissions", "edgeproxy.coroutine", "edgeproxy.deadline",
                  "edgeproxy.sqldb", "edgeproxy.latency", "edgeproxy.usrloc",
                  "edgeproxy.dialog", "edgeproxy.logcontext", "edgeproxy.acc")),
    ("proxy core", ("edgeproxy.proxy",)),
    ("routing", ("edgeproxy.routing",)),
    ("node", ("edgeproxy.node",)),
    ("glue", ("edgeproxy.transport", "edgeproxy.management", "edgeproxy.service", "edgeproxy.gcpolicy",
              "edgeproxy.node_settings", "edgeproxy.sdnotify")),
    ("loader", ("edgeproxy.config",)),
    ("tap", ("edgeproxy.tap", "edgeproxy.ctl")),
    ("plugin", ("twisted.plugins.edgeproxy_plugin",)),
]
RANK = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}
LAYER_NAME = {rank: name for rank, (name, _) in enumerate(LAYERS)}

SANS_IO = ["edgeproxy/sip", "edgeproxy/transaction", "edgeproxy/dns"]


# -- reading modules ---------------------------------------------------------------------------------
def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _all_modules() -> list[Path]:
    return _modules("edgeproxy") + [ROOT / PLUGIN]


def _module_name(path: Path, root: Path = ROOT) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _package_parts(path: Path, root: Path) -> list[str]:
    """The package that relative imports in ``path`` start from."""
    return list(path.relative_to(root).with_suffix("").parts)[:-1]


def _from_base(node: ast.ImportFrom, pkg_parts: list[str]) -> str:
    if node.level:
        base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST, *, runtime_only: bool) -> list[ast.AST]:
    """Every node; with ``runtime_only`` the bodies of ``if TYPE_CHECKING:`` are left out."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path, root: Path = ROOT, *, runtime_only: bool = False) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``; relative imports resolved."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    pkg_parts = _package_parts(path, root)
    out: list[tuple[int, str]] = []
    for node in _walk(tree, runtime_only=runtime_only):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = _from_base(node, pkg_parts)
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


#: Names with a leading underscore that their library documents as public API, not private.
DOCUMENTED_UNDERSCORE = frozenset({
    "os._exit",  # "exit the process with status n, without calling cleanup handlers" (the os docs)
})


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _rank(name: str) -> int | None:
    """The layer of a dotted name: that of the longest mapped module or package it is in."""
    parts = name.split(".")
    for n in range(len(parts), 1, -1):
        rank = RANK.get(".".join(parts[:n]))
        if rank is not None:
            return rank
    # the package root itself, or a name its __init__ defines (``from .. import __version__``); not an
    # unmapped module below it
    if parts[0] == "edgeproxy" and (len(parts) == 1 or not _is_module(name, ROOT)):
        return RANK["edgeproxy"]
    return None


def _ours(name: str) -> bool:
    return name == "edgeproxy" or name.startswith("edgeproxy.") or name.startswith("twisted.plugins.edgeproxy")


# -- the map -----------------------------------------------------------------------------------------
def test_every_module_has_a_layer() -> None:
    unplaced = [str(p.relative_to(ROOT)) for p in _all_modules() if _rank(_module_name(p)) is None]
    assert not unplaced, "modules in no layer (add them to LAYERS in tests/test_layers.py):\n" + "\n".join(unplaced)


def test_the_map_names_only_existing_modules() -> None:
    def exists(unit: str) -> bool:
        base = ROOT.joinpath(*unit.split("."))
        return base.with_suffix(".py").exists() or (base / "__init__.py").exists()

    stale = [unit for unit in RANK if not exists(unit)]
    assert not stale, f"LAYERS names modules that are gone: {stale}"


def _upward(path: Path) -> list[str]:
    mine = _rank(_module_name(path))
    assert mine is not None, f"{path.relative_to(ROOT)} is in no layer"
    bad = []
    for line, name in _imports(path):
        if not _ours(name):
            continue
        theirs = _rank(name)
        if theirs is not None and theirs > mine:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {name} ({LAYER_NAME[mine]} imports {LAYER_NAME[theirs]})")
    return bad


#: Violations known today, in modules being rewritten: module -> why. Each is a strict xfail, so the
#: test fails as soon as the module is fixed, and the entry must go.
KNOWN_UPWARD: dict[str, str] = {}
KNOWN_PRIVATE: dict[str, str] = {
    "edgeproxy/tap.py": "twisted.scripts.twistd._SomeApplicationRunner.loggerFactory builds twistd's own observer",
    "edgeproxy/transport/tls.py": "twisted.internet._sslverify.IOpenSSLTrustRoot for the CA bundle trust root: "
                                  "Twisted exports it nowhere public, and ssl.trustRootFromCertificates needs "
                                  "the pyOpenSSL X509 objects _CaBundle avoids",
}


def _per_module(known: dict[str, str]) -> list[object]:
    return [
        pytest.param(str(p.relative_to(ROOT)), id=str(p.relative_to(ROOT)),
                     marks=[pytest.mark.xfail(strict=True, reason=known[str(p.relative_to(ROOT))])]
                     if str(p.relative_to(ROOT)) in known else [])
        for p in _all_modules()
    ]


@pytest.mark.parametrize("module", _per_module(KNOWN_UPWARD))
def test_no_import_from_a_higher_layer(module: str) -> None:
    bad = _upward(ROOT / module)
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


# -- Twisted -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("package", SANS_IO)
def test_no_twisted_import_anywhere(package: str) -> None:
    files = _modules(package)
    if not files:
        pytest.skip(f"{package} has no modules yet")
    bad = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in files for line, name in _imports(p) if _is_twisted(name)]
    assert not bad, "sans-IO layer imports Twisted:\n" + "\n".join(bad)


def test_foundation_loads_no_twisted() -> None:
    files = [ROOT / "edgeproxy" / "__init__.py", ROOT / "edgeproxy" / "config_error.py",
             ROOT / "edgeproxy" / "config_schema.py"]
    bad = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in files for line, name in _imports(p) if _is_twisted(name)]
    assert not bad, "the foundation imports Twisted:\n" + "\n".join(bad)


def test_interfaces_import_twisted_only_for_type_checking() -> None:
    path = ROOT / "edgeproxy" / "interfaces.py"
    bad = [f"interfaces.py:{line}: {name}" for line, name in _imports(path, runtime_only=True) if _is_twisted(name)]
    assert not bad, "edgeproxy.interfaces imports Twisted at run time:\n" + "\n".join(bad)


def test_sip_core_is_self_contained() -> None:
    bad = []
    for p in _modules("edgeproxy/sip"):
        for line, name in _imports(p):
            parts = name.split(".")
            if parts[0] == "edgeproxy" and parts[1:2] != ["sip"]:
                bad.append(f"{p.relative_to(ROOT)}:{line}: {name}")
    assert not bad, "edgeproxy.sip imports other edgeproxy packages:\n" + "\n".join(bad)


def _fresh_import(modules: list[str]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {sorted(set(modules))!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'twisted' or m.startswith('twisted.'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def test_import_in_fresh_interpreter_loads_no_twisted() -> None:
    modules = [_module_name(path) for p in SANS_IO for path in _modules(p)]
    modules += ["edgeproxy.config_error", "edgeproxy.config_schema"]
    loaded = _fresh_import(modules)
    assert not loaded, f"importing the sans-IO layers loaded: {','.join(loaded)}"


def test_interfaces_in_fresh_interpreter_loads_no_twisted() -> None:
    loaded = _fresh_import(["edgeproxy.interfaces"])
    assert not loaded, f"importing edgeproxy.interfaces loaded: {','.join(loaded)}"


# -- private names -----------------------------------------------------------------------------------
def _is_module(name: str, root: Path) -> bool:
    if _ours(name):
        base = root.joinpath(*name.split("."))
        return base.with_suffix(".py").exists() or (base / "__init__.py").exists()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _private_use(importer: str, dotted: str) -> bool:
    """Whether ``importer`` reaching ``dotted`` uses a private name of another module: the first
    private component's owner (what comes before it) must be a package ``importer`` is in."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if _is_private(part):
            owner = ".".join(parts[:i])
            return not (importer == owner or importer.startswith(owner + "."))
    return False


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``from x import _y``, ``import x._y`` and ``mod._name`` on an imported module in ``path``."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    importer = _module_name(path, root)
    pkg_parts = _package_parts(path, root)
    where = path.relative_to(root)
    bad: list[str] = []
    modules: dict[str, str] = {}  # local name -> the module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _private_use(importer, alias.name):
                    bad.append(f"{where}:{node.lineno}: import {alias.name}")
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    modules[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, pkg_parts)
            for alias in node.names:
                if alias.name == "*":
                    continue
                full = f"{base}.{alias.name}"
                if _private_use(importer, full):
                    bad.append(f"{where}:{node.lineno}: from {base} import {alias.name}")
                if _is_module(full, root):
                    modules[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        chain = [node.attr]
        value = node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in modules:
            dotted = ".".join([modules[value.id], *reversed(chain)])
            if dotted in DOCUMENTED_UNDERSCORE:
                continue
            if _private_use(importer, dotted):
                bad.append(f"{where}:{node.lineno}: {value.id}.{'.'.join(reversed(chain))}")
    return bad


@pytest.mark.parametrize("module", _per_module(KNOWN_PRIVATE))
def test_no_use_of_another_modules_private_names(module: str) -> None:
    bad = _private_imports(ROOT / module)
    assert not bad, "private names used from outside their module or package:\n" + "\n".join(bad)


# -- the checker itself ------------------------------------------------------------------------------
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
    runtime = {n for _, n in _imports(fake, tmp_path, runtime_only=True)}
    assert "twisted.internet" not in runtime and "twisted.python.log" in runtime


def test_the_map_ranks_upward_imports() -> None:
    names = ["edgeproxy.sip.uri", "edgeproxy.dns.rfc3263", "edgeproxy.interfaces", "edgeproxy.registrar",
             "edgeproxy.proxy.engine", "edgeproxy.routing.verbs", "edgeproxy.node", "edgeproxy.transport.udp",
             "edgeproxy.service", "edgeproxy.config", "edgeproxy.tap", "twisted.plugins.edgeproxy_plugin"]
    assert [LAYER_NAME[_rank(name)] for name in names] == [  # type: ignore[index]
        "foundation", "sans-IO", "contract", "services", "proxy core", "routing", "node", "glue", "glue", "loader",
        "tap", "plugin"]
    ranks = [_rank(name) for name in names]
    assert ranks == sorted(ranks)
    assert _rank("edgeproxy.__version__") == _rank("edgeproxy") == 0  # a name the root defines
    assert _rank("twisted.internet") is None


def test_the_checker_sees_private_names(tmp_path: Path) -> None:
    pkg = tmp_path / "edgeproxy" / "transport"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "_util.py").write_text("def helper(): pass\n")
    (pkg / "tcp.py").write_text("from ._util import helper\nfrom . import _util\n")
    other = tmp_path / "edgeproxy" / "registrar"
    other.mkdir()
    (other / "__init__.py").write_text("")
    (other / "reg.py").write_text(
        "from ..transport._util import helper\n"
        "import edgeproxy.transport._util\n"
        "from ..transport import tcp\n"
        "from twisted.internet import _sslverify\n"
        "x = tcp._private\n"
        "y = tcp.__doc__\n"
        "from ..transport.tcp import _secret\n"
    )
    assert _private_imports(pkg / "tcp.py", tmp_path) == []  # a package's own private module
    found = _private_imports(other / "reg.py", tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "from edgeproxy.transport._util import helper",
        "import edgeproxy.transport._util",
        "from twisted.internet import _sslverify",
        "from edgeproxy.transport.tcp import _secret",
        "tcp._private",
    ]
