"""The module map of docs/architecture.md holds: packages stand on floors and import only
downwards, with no cycle; the rules of DESIGN.md (who may import optuna, click, pluggy; the
search never imports review; public Optuna only) are kept, lazy imports included."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "autofreeze"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def imports(path: Path) -> set[str]:
    """Top-level package names and ``autofreeze.*`` names imported at run time."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        for name in _imported(node):
            found.add(name.split(".")[0])
            if name.startswith("autofreeze."):
                found.add(name)
    return found


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def internal(module: str) -> set[str]:
    """The autofreeze modules ``module`` imports. ``from autofreeze.study import records`` is
    an import of the module ``autofreeze.study.records``, not of the package's re-exports."""
    out = set()
    names = MODULES[module]
    for name in names:
        if not name.startswith("autofreeze."):
            continue
        if any(other.startswith(name + ".") and other in MODULES for other in names):
            continue  # `from package import submodule`: the submodule counts
        while name not in MODULES:
            name = name.rsplit(".", 1)[0]
        if name not in (module, "autofreeze"):
            out.add(name)
    return out


def package(module: str) -> str:
    """The layer a module belongs to: its folder under ``autofreeze/``, or its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


# docs/architecture.md draws these floors: a package imports only packages on lower floors
FLOORS = {
    "errors": 0,
    "progress": 0,
    "plan": 1,
    "schedules": 1,
    "hookspecs": 1,
    "config": 2,
    "recipes": 2,
    "portfolio": 2,
    "data": 2,
    "core": 3,
    "cache": 4,
    "plugins": 4,
    "study": 4,
    "testing": 4,
    "runs": 5,
    "search": 6,
    "review": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 8,
}


def package_imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {package(m): set() for m in MODULES}
    for m in MODULES:
        out[package(m)] |= {package(d) for d in internal(m)} - {package(m)}
    return out


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in internal(m):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [dep])
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m)


def test_every_package_is_on_a_floor_and_imports_only_below_it():
    graph = package_imports()
    assert set(graph) == set(FLOORS), set(graph) ^ set(FLOORS)
    upward = {
        (low, high) for low, deps in graph.items() for high in deps if FLOORS[high] >= FLOORS[low]
    }
    assert not upward, f"imports that run up or sideways: {sorted(upward)}"


def test_the_layers_of_design_md_keep_their_rules():
    graph = package_imports()
    assert "review" not in graph["search"]  # observers, not imports, carry results up
    assert not graph["core"] & {"study", "search", "review", "runs", "cli"}
    assert not graph["study"] & {"core", "runs", "search", "review", "cli"}  # optuna only
    assert not graph["review"] & {"search", "runs", "core", "cache"}  # it never trains
    cli = {m for m in MODULES if package(m) == "cli"}
    assert {m for m in MODULES if internal(m) & cli} <= cli | {"autofreeze.__main__"}


@pytest.mark.parametrize(
    ("dependency", "allowed"),
    [
        ("click", {"cli", "hookspecs"}),  # hookspecs names click.Group for register_commands
        ("pluggy", {"hookspecs", "plugins"}),
        ("optuna", {"study", "search", "review", "runs", "cli"}),
        ("optuna_dashboard", {"review", "cli"}),  # `autofreeze dashboard` serves it
    ],
)
def test_third_party_imports_stay_where_design_md_puts_them(dependency, allowed):
    users = {package(m) for m, names in MODULES.items() if dependency in names}
    assert users <= allowed, users - allowed


def test_no_module_reads_a_private_attribute_of_optuna():
    """``study._storage``, ``trial._trial_id``, ``study._pop_waiting_trial_id``: an Optuna
    release can change them silently. Public API only (DESIGN.md section 3)."""
    private = re.compile(r"\b(?:study|trial|storage|frozen|t)\._[a-z]\w*")
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert not found, "\n".join(found)


def test_a_private_module_is_imported_only_inside_its_own_folder():
    """``plugins/builtin/_files.py`` is the built-in plugins' business; what another package
    needs of it lives in a public module (``data/folders.py``)."""
    crossing = {
        (m, dep)
        for m in MODULES
        for dep in internal(m)
        if dep.rsplit(".", 1)[1].startswith("_")
        and dep.rsplit(".", 1)[0] not in (m, m.rsplit(".", 1)[0])  # its package, or beside it
    }
    assert not crossing, sorted(crossing)


def test_only_the_registry_calls_hooks():
    callers = {
        module_name(p) for p in PACKAGE.rglob("*.py") if re.search(r"\.hook\.\w+", p.read_text())
    }
    assert callers == {"autofreeze.plugins.registry"}


def test_every_package_and_module_is_on_the_map():
    """docs/architecture.md names every package and every module (private ones by their
    package); size is guided by ruff's complexity rules, not by a line cap."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py":
            rel = "autofreeze/" if path.parent == PACKAGE else rel.removesuffix("__init__.py")
        elif path.name.startswith("_") and path.name != "__main__.py":
            rel = path.parent.relative_to(PACKAGE).as_posix() + "/"
        assert f"`{rel}`" in doc, f"docs/architecture.md does not list {rel}"


def test_plugins_need_only_the_hookspecs_module():
    """The plugin API is one documented place: the first-party plugin imports nothing else."""
    from autofreeze import hookspecs

    for name, module in hookspecs.PLUGIN_API.items():
        assert getattr(hookspecs, name) is getattr(importlib.import_module(module), name), name
    plugin = ROOT / "plugins" / "autofreeze-torchvision" / "autofreeze_torchvision"
    used = {n for p in plugin.glob("*.py") for n in imports(p) if n.startswith("autofreeze.")}
    assert {n for n in used if not n.startswith("autofreeze.hookspecs")} == set(), used
    assert "autofreeze.hookspecs.Backbone" in used  # the check sees the plugin's imports
    # registering must not import torch: the API is loaded on first use
    code = (
        "import sys; from autofreeze.hookspecs import hookimpl, BackboneRegister, PLUGIN_API; "
        "assert 'torch' not in sys.modules; "
        "from autofreeze.hookspecs import Backbone; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
