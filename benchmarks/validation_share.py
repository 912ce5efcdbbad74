"""What validating costs a trial: the quickstart with `[training] validate = "every_epoch"` and
with `"rungs"` (the default: only the epochs the pruner or the value reads).

Run: .venv/bin/python benchmarks/validation_share.py [--trials 24]
Writes docs/benchmarks.md (section "Validation share"). Each run is `autofreeze search` on a
copy of studies/quickstart.toml (the weights made once beforehand; no dashboard output, no
re-evaluation), the same seeds both times, on a fresh SQLite file. The two searches run at the
same time, one thread each, so that both meet the same load of a shared machine (one after the
other, the load of other work swung a trial's time by 2x either way). A trial records its wall
time (`seconds`: building, caching, training) and the part spent evaluating the validation
split (`validation_seconds`); the figures are their means over the finished trials, and each
search's CPU time (the work done, whatever the load).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
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


def start(path: Path, db: Path, trials: int) -> subprocess.Popen[bytes]:
    """Start the search on one thread."""
    command = [*CLI, "search", str(path), "--storage", f"sqlite:///{db}", "-q"]
    return subprocess.Popen(
        [*command, "--n-trials", str(trials)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
    )


def finish(procs: dict[str, subprocess.Popen[bytes]], t0: float) -> dict[str, tuple[float, float]]:
    """Wait for the searches, each as it ends: their wall and CPU seconds."""
    modes = {proc.pid: mode for mode, proc in procs.items()}
    out = {}
    while len(out) < len(procs):
        pid, status, usage = os.wait4(-1, 0)
        procs[modes[pid]].returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            raise SystemExit(f"the {modes[pid]} search failed with exit code {code}")
        out[modes[pid]] = (time.perf_counter() - t0, usage.ru_utime + usage.ru_stime)
    return out


def finished(db: Path) -> list[Any]:
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{db}")
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def cpu() -> str:
    info = Path("/proc/cpuinfo")
    names = (
        [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if "model name" in ln]
        if info.exists()
        else []
    )
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores"


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
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    subprocess.run([*CLI, "pretrain", str(QUICKSTART)], check=True, capture_output=True)
    load = os.getloadavg()[0]
    got: dict[str, dict[str, float]] = {}
    plans: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        procs = {m: start(config(folder, m), folder / f"{m}.db", args.trials) for m in MODES}
        wall = finish(procs, t0)
        for mode in MODES:
            trials = finished(folder / f"{mode}.db")
            got[mode] = figures(trials)
            plans[mode] = [str(sorted(records.plan(t).items())) for t in trials]
            print(f"validate={mode}: {got[mode]} {wall[mode]}", file=sys.stderr)
    load = max(load, os.getloadavg()[0])
    same = sum(a == b for a, b in zip(plans["every_epoch"], plans["rungs"], strict=False))
    every, rungs = got["every_epoch"], got["rungs"]
    rows = "\n".join(
        f"| `{mode}` | {g['trials']} ({g['pruned']} pruned) | {g['validated']:.1f} of "
        f"{g['epochs']:.1f} | {g['validating']:.2f} s | {100 * g['share']:.0f} % "
        f"({100 * g['backbone_share']:.0f} %) | {g['seconds']:.2f} s | "
        f"{g['seconds'] - g['validating']:.2f} s | {wall[mode][0]:.0f} s ({wall[mode][1]:.0f} s) |"
        for mode, g in got.items()
    )
    body = f"""
Command: `.venv/bin/python benchmarks/validation_share.py --trials {args.trials}`, on {cpu()}
shared with other work (load average up to {load:.1f}), Python {platform.python_version()}.
The quickstart search (resnet10t, 32 px digits, 8 epochs, 300 validation images; its first
{args.trials} trials, no dashboard output, no re-evaluation) with `[training] validate =
"every_epoch"` and with `"rungs"`, the same seeds, both searches at once on one thread each
(so that they meet the same load); {same} of the {args.trials} trials ran the same plan in
both. Per finished trial, means: epochs validated of epochs run, seconds spent validating, the
share of the trial's wall time that is (in brackets: the trials that trained a backbone, not
the head-only ones on pooled features), the trial's wall time and the rest of it (building,
caching, training: the same work either way); then the search's wall time (its CPU time).

| `validate` | trials | validated epochs | validating | share | trial time | rest | search (CPU) |
| --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Validating only where the value is read (the percentile pruner's epochs 6-8 and the last;
baselines there too, the pruner compares with them) cuts the validation per trial from
{every["validating"]:.2f} s to {rungs["validating"]:.2f} s and the mean trial from
{every["seconds"]:.2f} s to {rungs["seconds"]:.2f} s
({rungs["seconds"] / every["seconds"]:.2f}x); the share of a trial spent validating falls from
{100 * every["share"]:.0f} % to {100 * rungs["share"]:.0f} %. Training is unchanged (the trainer
test checks identical losses), so a trial that ran the same plan has the same value.
"""
    body = (
        "\n\n".join(  # the paragraphs filled (the values make their lines ragged), the table kept
            part if part.startswith("|") else textwrap.fill(" ".join(part.split()), 96)
            for part in body.strip().split("\n\n")
        )
    )
    write_section("Validation share", body)
    print(body)


if __name__ == "__main__":
    main()
