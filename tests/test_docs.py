"""docs/plugin_hooks.md documents every hook with its exact signature, and its examples run."""

from __future__ import annotations

import inspect
import re
import sys
import types
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from autofreeze import hookspecs
from autofreeze.errors import ConfigError
from autofreeze.plugins.manager import make_plugin_manager
from autofreeze.plugins.registry import Registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugin_hooks.md"
HOOKS = {
    name: fn
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "autofreeze_spec")
}


def signature_line(fn) -> str:
    """``def name(arg: Type) -> Ret`` from the (string) annotations of a hookspec."""
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {fn.__name__}({params}) -> {sig.return_annotation}"


def sections() -> dict[str, str]:
    """Level-2 sections of the doc by heading."""
    parts = re.split(r"^## (.+)$", DOC.read_text(), flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_hookspecs_are_found():
    assert {"register_backbones", "register_datasets"} <= set(HOOKS)
    assert signature_line(HOOKS["register_backbones"]) == (
        "def register_backbones(register: BackboneRegister) -> None"
    )


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_each_hook_has_a_section_with_its_exact_signature(hook):
    doc = sections()
    assert hook in doc, f"docs/plugin_hooks.md has no '## {hook}' section"
    lines = [line.strip() for line in doc[hook].splitlines()]
    assert signature_line(HOOKS[hook]) in lines
    assert any("@hookimpl" in block for block in python_blocks(doc[hook])), "no example"


def test_the_doc_documents_no_hook_that_does_not_exist():
    text = DOC.read_text()
    headings = set(sections())
    assert headings <= set(HOOKS), f"sections of unknown hooks: {headings - set(HOOKS)}"
    named = set(re.findall(r"^\s*def (register_\w+)\(", text, flags=re.MULTILINE))
    assert named <= set(HOOKS), f"unknown hooks in the doc: {named - set(HOOKS)}"


def example_plugins() -> list[tuple[str, int, str]]:
    found = []
    for hook, body in sections().items():
        plugins = [code for code in python_blocks(body) if "@hookimpl" in code]
        found += [(hook, i, code) for i, code in enumerate(plugins)]
    return found


EXAMPLES = example_plugins()


@pytest.mark.parametrize(
    ("hook", "index", "code"), EXAMPLES, ids=[f"{hook}-{i}" for hook, i, _ in EXAMPLES]
)
def test_each_example_is_a_working_plugin(hook, index, code, monkeypatch):
    plugin = types.ModuleType(f"doc_example_{hook}_{index}")
    # as a module of its own: no __future__ flags inherited from this file, importable by name
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    exec(compile(code, f"{DOC}:{hook}[{index}]", "exec", dont_inherit=True), plugin.__dict__)
    registry = Registry(make_plugin_manager(load_entry_points=False))
    with registry.plugin(plugin, name="doc-example"):  # check_pending: only real hooks
        row = {r["name"]: r for r in registry.plugins()}["doc-example"]
        assert row["hooks"] == [hook]
        CHECKS[hook](registry, row)


def check_backbones(registry: Registry, row: dict) -> None:
    names = list(row["backbones"])
    for ns in registry.backbone_namespaces():
        if ns.plugin == "doc-example":
            names.remove(f"{ns.name} (namespace)")
            names.append(next(iter(ns.obj.names())))
    assert names
    for name in names:
        for granularity in ("block", "stage"):
            bb = registry.create_backbone(name, num_classes=3, granularity=granularity)
            assert bb.name == name and bb.n_blocks >= 2
            c, h, w = bb.data_config["input_size"]
            assert bb.model.eval()(torch.zeros(1, c, h, w)).shape == (1, 3)


def check_datasets(registry: Registry, row: dict) -> None:
    assert row["datasets"]
    for name in row["datasets"]:
        data = registry.create_dataset(name)
        assert len(data.train) and len(data.val) and data.num_classes >= 2
        with pytest.raises(ConfigError, match=f"dataset '{name}' has no option 'no_such'"):
            registry.create_dataset(name, no_such=1)


def check_schedules(registry: Registry, row: dict) -> None:
    assert row["schedules"]
    for name in row["schedules"]:
        schedule_cls = registry.get_schedule(name)
        for n in (1, 5):
            for k in range(n + 1):
                schedule = schedule_cls(boundary=k, n_blocks=n, epochs=4)
                assert all(k <= schedule.phase(e).first_trainable <= n for e in range(4))


def check_commands(registry: Registry, row: dict) -> None:
    group = click.Group("autofreeze")
    registry.add_commands(group)
    assert group.commands
    for name in group.commands:
        result = CliRunner().invoke(group, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.stdout
    if "count-blocks" in group.commands:
        result = CliRunner().invoke(group, ["count-blocks", "test_resnet"])
        assert result.exit_code == 0 and result.stdout == "5\n"


CHECKS = {
    "register_backbones": check_backbones,
    "register_datasets": check_datasets,
    "register_schedules": check_schedules,
    "register_commands": check_commands,
}


def test_every_hook_has_a_check():
    assert set(CHECKS) == set(HOOKS)


def test_the_writing_plugins_walkthrough_runs(tmp_path, monkeypatch):
    """docs/writing_plugins.md: its plugin module, then its test snippet (check_backbone)."""
    text = (DOC.parent / "writing_plugins.md").read_text()
    blocks = python_blocks(text)
    (module,) = [b for b in blocks if b.startswith("# src/af_tiny/plugin.py")]
    (snippet,) = [b for b in blocks if "import af_tiny.plugin" in b]
    package = tmp_path / "af_tiny"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    exec(compile(snippet, "writing_plugins.md", "exec", dont_inherit=True), {})
