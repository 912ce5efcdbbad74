"""The README's main job in a reduced form: the real quickstart config, fewer trials/epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the real quickstart config: the full suite, not `make check`


ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_config_runs_reduced(tmp_path):
    storage = f"sqlite:///{tmp_path}/quickstart.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autofreeze",
            "search",
            str(ROOT / "studies" / "quickstart.toml"),
            "--n-trials",
            # 12 trials, then 3 re-runs: the budget's room for first plans (about 8 here) is
            # shared by the default's portfolio and recipes, the probe picking which
            "15",
            "--epochs",
            "2",
            "--storage",
            storage,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        stdin=subprocess.DEVNULL,
        # torch's own threads, as `make quickstart` has them: the weights this run makes (when
        # missing) are then the ones the README's figures come from (tests/conftest.py sets
        # one thread for the processes of a parallel suite; the numbers depend on it)
        env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    recipes = [row["recipe"] for row in out["comparison"]]
    assert recipes[0].startswith("BEST")
    # the default first plans: the portfolio's and the textbook recipes, both kinds queued
    assert "enqueued portfolio " in proc.stderr and "enqueued baseline " in proc.stderr
    assert "the budget runs about" in proc.stderr  # and it says how many it kept
    # the recipes the probe kept (which ones depends on the weights, and so on the machine's
    # float arithmetic: not fixed here) are the table's rows, and each ran to the end
    # (baselines are never pruned) on the 2 epochs
    kept = proc.stderr.split("enqueued baseline ", 1)[1].split("\n", 1)[0].split(", ")
    baselines = out["comparison"][1:]
    assert sorted(kept) == sorted(r["recipe"] for r in baselines), (kept, recipes)
    assert all(r["state"] == "COMPLETE" and r["epochs_run"] == 2 for r in baselines)
    assert all(0.0 <= r["value"] <= 1.0 for r in baselines)
    # progress goes to stderr: in a log, a few lines (no line per epoch) and the end
    assert proc.stderr.count("12/12 trials and 3 re-runs done (") == 1
    assert "epoch 1/2" not in proc.stderr and len(proc.stderr.splitlines()) < 40
    assert "A new study created" not in proc.stderr  # optuna's INFO chatter is silenced
    assert (ROOT / "studies" / "weights" / "resnet10t-digits0-4.safetensors").is_file()
