"""Plugins defined inside the tests: registration, the CLI's view of them, and validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pluggy
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from autofreeze.core.backbones import Backbone
from autofreeze.data.images import ImageDataset, ImageSet
from autofreeze.errors import PluginError, UnknownNameError
from autofreeze.hookspecs import hookimpl
from autofreeze.plugins.manager import DISABLE_ENV, make_plugin_manager
from autofreeze.plugins.registry import Registry, get_registry
from tests.commands import invoke

ROOT = Path(__file__).resolve().parents[2]
DATASETS_PLUGIN = "autofreeze.plugins.builtin.datasets"


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.stem(x)).mean(dim=(2, 3)))


def tiny_cnn(name: str, *, num_classes: int, weights: str | None, granularity: str) -> Backbone:
    blocks = [["stem"], ["body.0"], ["body.1"]] if granularity == "block" else [["stem", "body"]]
    return Backbone.from_prefixes(
        name,
        TinyCNN(num_classes),
        blocks,
        ["fc"],
        data_config={"mean": (0.5,) * 3, "std": (0.5,) * 3, "input_size": (3, 16, 16)},
        num_classes=num_classes,
        weights=weights or "none",
    )


def two_squares(*, per_class: int = 3) -> ImageDataset:
    """Dark and bright 8 x 8 images."""
    images = [np.full((8, 8), v, dtype=np.uint8) for v in (20, 230) for _ in range(per_class)]
    labels = [c for c in (0, 1) for _ in range(per_class)]
    return ImageDataset(
        "two-squares",
        ["dark", "bright"],
        ImageSet(images, labels),
        ImageSet(images[:1] + images[-1:], [0, 1]),
    )


class ExamplePlugin:
    @hookimpl
    def register_backbones(self, register):
        register("tiny-cnn", tiny_cnn, description="a three-block CNN for tests")

    @hookimpl
    def register_datasets(self, register):
        register("two-squares", two_squares, description="dark and bright squares")


def one_error_line(result) -> str:
    """The CLI failed with exit code 1 and one ``Error:`` line on stderr, nothing on stdout."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def test_plugin_registers_a_backbone_and_a_dataset():
    registry = get_registry()
    with registry.plugin(ExamplePlugin(), name="test-plugin"):
        assert registry.list_backbones("tiny-*") == ["tiny-cnn"]
        assert registry.backbone_plugin("tiny-cnn") == "test-plugin"
        bb = registry.create_backbone("tiny-cnn", num_classes=4)
        assert [b.name for b in bb.blocks] == ["stem", "body.0", "body.1"]
        assert bb.head_param_names == ("fc.weight", "fc.bias")
        assert bb.model(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
        assert (
            registry.create_backbone("tiny-cnn", num_classes=4, granularity="stage").n_blocks == 1
        )
        assert "two-squares" in registry.list_datasets()
        entry = registry.dataset_entries()["two-squares"]
        assert (entry.plugin, entry.description) == ("test-plugin", "dark and bright squares")
        data = registry.create_dataset("two-squares", per_class=4)
        assert data.classes == ["dark", "bright"] and len(data.train) == 8
    assert not registry.pm.has_plugin("test-plugin")
    with pytest.raises(UnknownNameError, match="unknown backbone 'tiny-cnn'"):
        registry.create_backbone("tiny-cnn", num_classes=4)
    with pytest.raises(UnknownNameError, match="unknown dataset 'two-squares'"):
        registry.create_dataset("two-squares")


def test_cli_inspect_shows_the_plugin_backbone():
    with get_registry().plugin(ExamplePlugin(), name="test-plugin"):
        text = invoke("inspect", "tiny-cnn", "--num-classes", "4")
        data = invoke("inspect", "tiny-cnn", "--num-classes", "4", "--json")
        stage = invoke("inspect", "tiny-cnn", "--granularity", "stage", "--json")
    assert text.exit_code == 0, text.output
    assert "tiny-cnn: 3 blocks" in text.stdout
    rows = [line.split() for line in text.stdout.splitlines()[3:]]
    assert [r[:2] for r in rows] == [
        ["0", "stem"],
        ["1", "body.0"],
        ["2", "body.1"],
        ["head", "fc"],
    ]
    info = json.loads(data.stdout)
    assert [b["name"] for b in info["blocks"]] == ["stem", "body.0", "body.1"]
    assert info["blocks"][1]["param_names"] == ["body.0.weight", "body.0.bias"]
    assert info["head"] == {
        "name": "fc",
        "params": 8 * 4 + 4,
        "param_names": ["fc.weight", "fc.bias"],
    }
    assert [b["name"] for b in json.loads(stage.stdout)["blocks"]] == ["stem+body"]


def test_cli_plugins_lists_what_each_plugin_registers():
    with get_registry().plugin(ExamplePlugin(), name="test-plugin"):
        result = invoke("plugins", "--json")
        text = invoke("plugins")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["test-plugin"]["backbones"] == ["tiny-cnn"]
    assert rows["test-plugin"]["datasets"] == ["two-squares"]
    assert rows["test-plugin"]["hooks"] == ["register_backbones", "register_datasets"]
    assert rows["autofreeze.plugins.builtin.timm_backbones"]["backbones"] == ["timm (namespace)"]
    assert "digits" in rows[DATASETS_PLUGIN]["datasets"]
    assert "test-plugin  (autofreeze)" in text.stdout
    assert "  datasets: two-squares" in text.stdout


def test_cli_dataset_shows_the_plugin_dataset():
    with get_registry().plugin(ExamplePlugin(), name="test-plugin"):
        shown = invoke("dataset", "two-squares", "-o", "per_class=5")
        listed = invoke("datasets", "--json")
    assert shown.exit_code == 0, shown.output
    assert "two-squares: 2 classes, 10 train, 2 val images" in shown.stdout
    assert "bright" in shown.stdout
    assert {
        "name": "two-squares",
        "plugin": "test-plugin",
        "description": "dark and bright squares",
    } in json.loads(listed.stdout)


class DigitsAgain:
    @hookimpl
    def register_datasets(self, register):
        register("digits", two_squares)


def test_a_duplicate_dataset_names_both_plugins():
    registry = get_registry()
    with registry.plugin(DigitsAgain(), name="digits-again"):
        with pytest.raises(PluginError) as info:
            registry.create_dataset("digits")
        message = one_error_line(invoke("dataset", "digits"))
    expected = (
        f"dataset 'digits' is registered twice: by plugin {DATASETS_PLUGIN!r} and by plugin "
        "'digits-again'"
    )
    assert str(info.value).startswith(expected)
    assert message.startswith(f"Error: {expected}")
    assert registry.create_dataset("digits", classes=[0, 1]).classes == ["0", "1"]


def test_two_plugins_registering_one_backbone_name_fail():
    registry = Registry(make_plugin_manager(load_entry_points=False))
    first, second = ExamplePlugin(), ExamplePlugin()
    expected = (
        "backbone 'tiny-cnn' is registered twice: by plugin 'plugin-a' and by plugin 'plugin-b'"
    )
    with (
        registry.plugin(first, name="plugin-a"),
        registry.plugin(second, name="plugin-b"),
        pytest.raises(PluginError, match=expected),
    ):
        registry.list_backbones()
    assert "tiny-cnn" not in registry.backbone_entries()


def test_disable_env_blocks_a_built_in(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, f"{DATASETS_PLUGIN}, test-plugin")
    registry = Registry()
    with pytest.raises(UnknownNameError, match="unknown dataset 'digits'"):
        registry.create_dataset("digits")
    builtin = {"digits", "synthetic", "imagefolder", "csv"}
    assert not builtin & set(registry.list_datasets())  # installed plugins' datasets may remain
    assert DATASETS_PLUGIN not in [row["name"] for row in registry.plugins()]
    assert "resnet10t" in registry.list_backbones("resnet1*")  # the other built-ins still load
    before = registry.list_datasets()
    with registry.plugin(ExamplePlugin(), name="test-plugin"):  # blocked by name as well
        assert registry.list_datasets() == before


def test_disable_env_through_the_cli():
    env = dict(os.environ, **{DISABLE_ENV: DATASETS_PLUGIN})
    proc = subprocess.run(
        [sys.executable, "-m", "autofreeze", "dataset", "digits"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: unknown dataset 'digits'"


class Misspelled:
    @hookimpl
    def register_backbone(self, register):  # the hook is register_backbones
        register("never", tiny_cnn)


def test_check_pending_rejects_a_misspelled_hook():
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Misspelled(), name="misspelled")
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'register_backbone'"):
        pm.check_pending()


def test_registry_plugin_rejects_a_misspelled_hook():
    registry = Registry(make_plugin_manager(load_entry_points=False))
    with pytest.raises(PluginError) as info, registry.plugin(Misspelled(), name="misspelled"):
        pass
    assert "plugin 'misspelled' is invalid: unknown hook 'register_backbone'" in str(info.value)
    assert "register_backbones" in str(info.value)  # the valid names
    assert not registry.pm.has_plugin("misspelled")


def test_a_wrong_hook_argument_is_rejected():
    class WrongArgument:
        @hookimpl
        def register_datasets(self, reg):
            pass

    registry = Registry(make_plugin_manager(load_entry_points=False))
    with (
        pytest.raises(PluginError, match="plugin 'wrong' is invalid: .*'reg'"),
        registry.plugin(WrongArgument(), name="wrong"),
    ):
        pass


def test_register_commands_adds_a_command():
    class Commands:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    registry = Registry(make_plugin_manager(load_entry_points=False))
    group = click.Group("autofreeze")
    with registry.plugin(Commands(), name="commands"):
        registry.add_commands(group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and result.stdout == "hello from a plugin\n"


# -- entry points: a plugin "installed" as a distribution on sys.path -----------------------------
def install_plugin(tmp_path: Path, module: str, source: str, ep_name: str = "tiny") -> Path:
    """Write a module and a ``.dist-info`` declaring it in the ``autofreeze`` entry-point group."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{module.replace('_', '-')}-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text(f"[autofreeze]\n{ep_name} = {module}\n")
    return tmp_path


PLUGIN_SOURCE = """
    from autofreeze.hookspecs import hookimpl

    @hookimpl
    def register_datasets(register):
        from autofreeze.plugins.builtin.datasets import synthetic
        register("ep-synthetic", synthetic, description="from an entry point")
"""


def test_entry_point_plugin_loads_and_can_be_blocked(tmp_path, monkeypatch):
    module = f"af_ep_plugin_{tmp_path.name.replace('-', '_')}"
    monkeypatch.syspath_prepend(str(install_plugin(tmp_path, module, PLUGIN_SOURCE)))
    registry = Registry()
    assert registry.dataset_entries()["ep-synthetic"].plugin == "tiny"
    row = {r["name"]: r for r in registry.plugins()}["tiny"]
    assert row["package"] == f"{module} 0.3" and row["datasets"] == ["ep-synthetic"]
    monkeypatch.setenv(DISABLE_ENV, "tiny")
    assert "ep-synthetic" not in Registry().list_datasets()


def test_entry_point_plugin_with_a_misspelled_hook_is_one_error_line(tmp_path, monkeypatch):
    module = f"af_bad_plugin_{tmp_path.name.replace('-', '_')}"
    source = PLUGIN_SOURCE.replace("def register_datasets", "def register_dataset")
    path = install_plugin(tmp_path, module, source, ep_name="bad")
    monkeypatch.syspath_prepend(str(path))
    with pytest.raises(
        PluginError, match="plugin 'bad' is invalid: unknown hook 'register_dataset'"
    ):
        make_plugin_manager()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "autofreeze", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: plugin 'bad' is invalid: unknown hook 'register_dataset'")
    assert f"{DISABLE_ENV}=bad" in proc.stderr


def test_entry_point_plugin_that_cannot_be_imported_is_one_error_line(tmp_path, monkeypatch):
    """A plugin broken at import (a missing dependency, a syntax error) names itself in one
    line and can be blocked; the commands then run without it."""
    module = f"af_broken_plugin_{tmp_path.name.replace('-', '_')}"
    path = install_plugin(tmp_path, module, "import no_such_dependency_af\n", ep_name="broken")
    monkeypatch.syspath_prepend(str(path))
    with pytest.raises(PluginError, match="plugin 'broken' .* cannot be imported: ModuleNotFound"):
        make_plugin_manager()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(ROOT)]))
    run = [sys.executable, "-m", "autofreeze", "datasets"]
    proc = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "no_such_dependency_af" in proc.stderr and f"{DISABLE_ENV}=broken" in proc.stderr
    env[DISABLE_ENV] = "broken"
    proc = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 0 and "digits" in proc.stdout, proc.stderr
