"""The command line: bad input ends as one clear line, ``--help`` is fast and torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autofreeze.plugins.registry import Registry
from tests.commands import invoke, run_cli

ROOT = Path(__file__).resolve().parents[2]


def error_line(result, exit_code: int = 1) -> str:
    """Exit code 1, nothing on stdout, one ``Error:`` line on stderr and no traceback.

    Works for a ``subprocess.CompletedProcess`` and for a click ``Result``.
    """
    code = getattr(result, "returncode", getattr(result, "exit_code", None))
    assert code == exit_code, (result.stdout, result.stderr)
    if hasattr(result, "exception"):
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def usage_error(result, option: str) -> None:
    """Exit code 2: click's usage message naming the option, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert "Usage: " in result.stderr
    assert f"Error: Invalid value for '{option}'" in result.stderr


# -- bad input: run_cli is a real subprocess, invoke runs click in process ------------------
def test_unknown_backbone_lists_close_names():
    line = error_line(run_cli("inspect", "resnet1t"))
    assert line.startswith("Error: unknown backbone 'resnet1t'; did you mean")
    assert "'resnet10t'" in line and "autofreeze backbones" in line


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    garbage = folder / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 not a checkpoint " * 8)
    other = folder / "test_resnet.pth"  # weights of another architecture
    torch.save(Registry().create_backbone("test_resnet", num_classes=3).model.state_dict(), other)
    return {"garbage": garbage, "other": other, "missing": folder / "missing.safetensors"}


def test_unreadable_weights_file(weight_files):
    path = weight_files["garbage"]
    line = error_line(invoke("inspect", "resnet10t", "--weights", str(path)))
    assert line.startswith(f"Error: cannot read weights file '{path}'")


def test_mismatched_weights_file(weight_files):
    path = weight_files["other"]
    line = error_line(run_cli("inspect", "resnet10t", "--weights", str(path)))
    assert line.startswith(f"Error: weights file '{path}' does not match backbone 'resnet10t'")


def test_missing_weights_file(weight_files):
    path = weight_files["missing"]
    line = error_line(invoke("inspect", "test_resnet", "--weights", str(path)))
    assert line == f"Error: weights file '{path}' does not exist"


def test_hf_hub_name_offline():
    start = time.perf_counter()
    line = error_line(invoke("inspect", "hf-hub:timm/resnet10t.a1_in1k"))
    assert line.startswith("Error: cannot build timm model 'hf-hub:timm/resnet10t.a1_in1k'")
    assert time.perf_counter() - start < 10


def test_unknown_dataset():
    line = error_line(invoke("dataset", "digitz"))
    assert line == "Error: unknown dataset 'digitz'; did you mean 'digits'?"


def test_unknown_dataset_option():
    line = error_line(invoke("dataset", "digits", "-o", "colour=3"))
    assert line.startswith("Error: dataset 'digits' has no option 'colour' (allowed: classes,")


def test_missing_dataset_option():
    line = error_line(invoke("dataset", "imagefolder"))
    assert line == "Error: dataset 'imagefolder' needs option 'path'"


def test_bad_dataset_option_value():
    line = error_line(invoke("dataset", "digits", "-o", "classes=[1, 12]"))
    assert "option 'classes' holds [12] but digits are 0..9" in line


def test_missing_image_folder(tmp_path):
    missing = tmp_path / "flowers"
    line = error_line(invoke("dataset", "imagefolder", "-o", f"path={missing}"))
    assert line == f"Error: dataset folder not found: {missing}"


def test_empty_image_folder(tmp_path):
    line = error_line(invoke("dataset", "imagefolder", "-o", f"path={tmp_path}"))
    assert line.startswith(f"Error: {tmp_path} has no class sub-folders")


def test_model_without_stage_grouping():
    line = error_line(invoke("inspect", "rdnet_tiny", "--granularity", "stage"))
    assert "'rdnet_tiny' cannot be cut by stage" in line and "use granularity 'block'" in line


def test_bad_granularity_is_a_usage_error():
    usage_error(invoke("inspect", "resnet10t", "--granularity", "layer"), "--granularity")


def test_bad_num_classes_is_a_usage_error():
    usage_error(invoke("inspect", "resnet10t", "--num-classes", "0"), "--num-classes")


def test_malformed_dataset_option_is_a_usage_error():
    result = invoke("dataset", "digits", "-o", "classes")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "Error: --option must look like key=value, not 'classes'" in result.stderr


# -- --help and inspect ------------------------------------------------------------------------
HELP_PROBE = """
import sys, runpy
sys.argv = ["autofreeze", "--help"]
try:
    runpy.run_module("autofreeze", run_name="__main__")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = sorted({"torch", "timm", "torchvision", "optuna"} & set(sys.modules))
print("HEAVY:" + ",".join(heavy))
"""


def test_help_does_not_import_torch():
    proc = subprocess.run(
        [sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage: autofreeze" in proc.stdout and "inspect" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "HEAVY:"


def test_help_is_fast():
    times = []
    for _ in range(3):  # the best of three: a busy machine may stall one run
        start = time.perf_counter()
        proc = run_cli("--help", timeout=30)
        times.append(time.perf_counter() - start)
        assert proc.returncode == 0 and "Usage:" in proc.stdout
    print(f"autofreeze --help: {min(times):.3f} s (runs: {', '.join(f'{t:.3f}' for t in times)})")
    assert min(times) < 1.0


def test_inspect_json_lists_blocks_and_head():
    result = invoke("inspect", "resnet10t", "--num-classes", "3", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["backbone"] == "resnet10t" and info["n_blocks"] == 5
    assert [b["index"] for b in info["blocks"]] == [0, 1, 2, 3, 4]
    names = [b["name"] for b in info["blocks"]]
    assert names == ["conv1+bn1", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    for block in info["blocks"]:
        assert set(block) == {"index", "name", "params", "param_names"}
        assert block["params"] > 0 and block["param_names"]
    assert info["blocks"][0]["param_names"][0] == "conv1.0.weight"
    assert info["head"] == {
        "name": "fc",
        "params": 512 * 3 + 3,
        "param_names": ["fc.weight", "fc.bias"],
    }
    counted = sum(b["params"] for b in info["blocks"]) + info["head"]["params"]
    assert counted == info["total_params"]


def test_inspect_text_lists_the_blocks():
    result = invoke("inspect", "resnet10t", "--num-classes", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("resnet10t: 5 blocks,")
    assert lines[1].split() == ["index", "name", "params"]
    rows = [line.split()[:2] for line in lines[3:]]
    assert rows == [
        ["0", "conv1+bn1"],
        ["1", "layer1.0"],  # resnet10t has one residual block per stage
        ["2", "layer2.0"],
        ["3", "layer3.0"],
        ["4", "layer4.0"],
        ["head", "fc"],
    ]
    assert "boundary k freezes blocks 0..k-1; k ranges over 0..5" in result.stderr


# -- dashboard ---------------------------------------------------------------------------------
def test_dashboard_for_a_study_the_storage_does_not_hold_is_one_line_and_serves_nothing(
    tmp_path, monkeypatch
):
    import optuna

    from autofreeze.review import dashboard
    from tests.studies import write_study

    config = write_study(tmp_path, "mine")
    url = f"sqlite:///{tmp_path / 'mine.db'}"  # the config's storage, holding another study
    optuna.create_study(study_name="theirs", storage=url)
    served = []
    monkeypatch.setattr(dashboard, "serve", lambda *a, **kw: served.append(kw))
    line = error_line(invoke("dashboard", str(config)))
    assert line == (
        f"Error: no study 'mine' in {url} (studies there: theirs); run `autofreeze search` first"
    )
    assert served == []
    # the same through a real process: it ends at once instead of serving an empty dashboard
    assert error_line(run_cli("dashboard", str(config), timeout=60)) == line
    # a study that is there is served
    optuna.create_study(study_name="mine", storage=url)
    assert invoke("dashboard", str(config)).exit_code == 0 and len(served) == 1
