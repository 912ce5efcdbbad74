"""What validating costs a trial: the quickstart with `[training] validate = "every_epoch"` and
with `"rungs"` (the default: only the epochs the pruner or the value reads).

Run: .venv/bin/python benchmarks/validation_share.py [--trials 12]
Writes docs/benchmarks.md (section "Validation share"). Each run is `autofreeze search` on a
copy of studies/quickstart.toml (the weights made once beforehand; no dashboard output, no
re-evaluation), the same seeds both times, on a fresh SQLite file. A trial records its wall
time (`seconds`: building, caching, training) and the part spent evaluating the validation
split (`validation_seconds`); the figures are their means over the finished trials.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autofreeze.study import records  # noqa: E402
from benchmarks._report import write_section  # noqa: E402

QUICKSTART = ROOT / "studies" / "quickstart.toml"
CLI = [sys.executable, "-m", "autofreeze"]
MODES = ("every_epoch", "rungs")


def config(folder: Path, validate: str) -> Path:
    text = QUICKSTART.read_text()
    text = text.replace("[study]\n", "[study]\ndashboard = false\nreevaluate = 0\n", 1)
    text = text.replace("[training]\n", f'[training]\nvalidate = "{validate}"\n', 1)
    weights = ROOT / "studies" / "weights" / "resnet10t-digits0-4.safetensors"
    text = re.sub(r'^weights = "[^"]*"', f'weights = "{weights}"', text, flags=re.M)
    path = folder / f"quickstart-{validate}.toml"
    path.write_text(text)
    return path


def search(path: Path, db: Path, trials: int) -> tuple[float, list[Any]]:
    """Run the search; its wall time and finished trials."""
    storage = f"sqlite:///{db}"
    t0 = time.perf_counter()
    subprocess.run(
        [*CLI, "search", str(path), "--storage", storage, "--n-trials", str(trials), "-q"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t0
    study = optuna.load_study(study_name="quickstart", storage=storage)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return seconds, [t for t in study.get_trials(deepcopy=False) if t.state in done]


def figures(trials: list[Any]) -> dict[str, float]:
    seconds = [records.seconds(t) for t in trials]
    validating = [records.cost_value(t, records.VALIDATION_SECONDS) for t in trials]
    backbone = [t for t in trials if records.cache_kind(t) != "pooled"]  # not head-only
    return {
        "trials": len(trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "share": statistics.fmean(v / s for v, s in zip(validating, seconds, strict=True)),
        "seconds": statistics.fmean(seconds),
        "validating": statistics.fmean(validating),
        "backbone_share": statistics.fmean(
            records.cost_value(t, records.VALIDATION_SECONDS) / records.seconds(t) for t in backbone
        ),
        "validated": statistics.fmean(
            sum(h["val_accuracy"] is not None for h in records.history(t)) for t in trials
        ),
        "epochs": statistics.fmean(len(records.history(t)) for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    subprocess.run([*CLI, "pretrain", str(QUICKSTART)], check=True, capture_output=True)
    got: dict[str, dict[str, float]] = {}
    plans: dict[str, list[str]] = {}
    wall: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for mode in MODES:
            wall[mode], trials = search(config(folder, mode), folder / f"{mode}.db", args.trials)
            got[mode] = figures(trials)
            plans[mode] = [str(sorted(records.plan(t).items())) for t in trials]
            print(f"validate={mode}: {got[mode]}", file=sys.stderr)
    same = sum(a == b for a, b in zip(plans["every_epoch"], plans["rungs"], strict=False))
    every, rungs = got["every_epoch"], got["rungs"]
    rows = "\n".join(
        f"| `{mode}` | {g['trials']} ({g['pruned']} pruned) | {g['validated']:.1f} of "
        f"{g['epochs']:.1f} | {g['validating']:.2f} s | {100 * g['share']:.0f} % "
        f"({100 * g['backbone_share']:.0f} %) | {g['seconds']:.2f} s | {wall[mode]:.0f} s |"
        for mode, g in got.items()
    )
    body = f"""
Command: `.venv/bin/python benchmarks/validation_share.py --trials {args.trials}`, on
{platform.machine()}, 2 cores (shared), Python {platform.python_version()}. The quickstart
search (resnet10t, 32 px digits, 8 epochs, 300 validation images; first {args.trials} trials,
no dashboard output, no re-evaluation) once with `[training] validate = "every_epoch"` and
once with `"rungs"`, the same seeds; {same} of the {args.trials} trials ran the same plan in
both. Per finished trial, means: epochs validated of epochs run, seconds spent validating,
the share of the trial's wall time that is (in brackets: trials that trained a backbone, not
the head-only ones on pooled features), and the trial's wall time.

| `validate` | trials | epochs validated | validating | share of trial time | trial time | search |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

Validating only where the value is read (the percentile pruner's epochs 6-8 and the last) cuts
the mean trial from {every["seconds"]:.2f} s to {rungs["seconds"]:.2f} s
({rungs["seconds"] / every["seconds"]:.2f}x); the share of a trial spent validating falls from
{100 * every["share"]:.0f} % to {100 * rungs["share"]:.0f} %. Training is unchanged (the
trainer test checks identical losses), so the trials' values are the same where they ran the
same plan.
"""
    write_section("Validation share", body)
    print(body)


if __name__ == "__main__":
    main()
