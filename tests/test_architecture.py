"""The module map of docs/architecture.md holds: dependencies run one way, and the rules of
DESIGN.md (who may import optuna, click, pluggy) are kept, lazy imports included."""

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


def imports(path: Path) -> set[str]:
    """Top-level package names and ``autofreeze.*`` modules imported at run time."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            found.add(name.split(".")[0])
            if name.startswith("autofreeze."):
                found.add(name)
    return found


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def internal(module: str) -> set[str]:
    """The autofreeze modules ``module`` imports (submodule names resolved to modules)."""
    out = set()
    for name in MODULES[module]:
        while name.startswith("autofreeze.") and name not in MODULES:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name not in (module, "autofreeze"):
            out.add(name)
    return out


def importers(module: str) -> set[str]:
    return {m for m in MODULES if module in internal(m)}


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


def test_dependencies_run_one_way_from_the_cli():
    cli = {m for m in MODULES if m.startswith("autofreeze.cli")}
    assert {m for c in cli for m in importers(c)} <= cli | {"autofreeze.__main__"}
    assert importers("autofreeze.search") <= cli
    assert importers("autofreeze.objective") == {"autofreeze.search"}
    assert importers("autofreeze.workers") == {"autofreeze.search"}
    # the layers below the search never reach up to it
    for low in ("build", "space", "freezing", "train", "cache", "study", "records", "registry"):
        deps = internal(f"autofreeze.{low}")
        assert not deps & ({"autofreeze.search", "autofreeze.objective"} | cli), low


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        (
            "click",
            {
                f"autofreeze.cli{m}"
                for m in ("", "._group", "._catalog", "._studies", "._model", "._report")
                + ("._results",)
            },
        ),
        ("pluggy", {"autofreeze.hookspecs", "autofreeze.plugins", "autofreeze.registry"}),
        ("optuna", None),  # checked below: never in the training loop or the freezing
    ],
)
def test_third_party_imports_stay_where_design_md_puts_them(package, allowed):
    users = {m for m, names in MODULES.items() if package in names}
    if allowed is not None:
        assert users <= allowed, users - allowed
    else:
        assert not users & {"autofreeze.train", "autofreeze.freezing", "autofreeze.plan"}


def test_only_the_registry_calls_hooks():
    callers = {
        module_name(p) for p in PACKAGE.rglob("*.py") if re.search(r"\.hook\.\w+", p.read_text())
    }
    assert callers == {"autofreeze.registry"}


def test_every_module_is_on_the_map_and_none_is_long():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py" and path.parent != PACKAGE:
            rel = path.parent.relative_to(PACKAGE).as_posix() + "/"
        elif path.parent.name in ("schedules", "default_plugins", "cli"):
            rel = path.parent.name + "/"
        assert f"`{rel}`" in doc, f"docs/architecture.md does not list {rel}"
        lines = len(path.read_text().splitlines())
        assert lines <= 350, f"{rel} has {lines} lines; split it by concept"


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
