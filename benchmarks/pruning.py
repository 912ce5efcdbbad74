"""Pruner calibration from full learning curves: which pruner saves compute without discarding
the plans that would have won?

Run: .venv/bin/python benchmarks/pruning.py [--curves benchmarks/results/curves.json]
Writes the section "Pruning calibration" of docs/benchmarks.md. The curves are the validation
accuracy after every epoch of every trial of the unpruned (vanilla) studies that
``benchmarks/search_quality.py`` runs; it saves them to the file above and calls
:func:`calibrate` itself.

Each candidate pruner is replayed with Optuna itself: the trials of a task are told to an
in-memory study in their original order, each reporting its curve epoch by epoch until the
pruner stops it. What is measured per candidate, over all tasks:

- ``saved``: the share of training epochs the pruned trials did not run;
- ``lost best``: tasks whose best trial (by final value) the pruner would have pruned;
- ``lost top 3``: of the three best trials per task, how many it would have pruned.

The default pruner is the candidate that saves the most while losing no task's best trial and
at most one top-3 trial per task (see :func:`pick`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402

CURVES = ROOT / "benchmarks" / "results" / "curves.json"
FRACTIONS = (0.2, 0.35, 0.5, 0.65, 0.8)  # prune_after candidates: a share of the epochs


def candidates(epochs: int) -> dict[str, Callable[[], Any]]:
    """Pruners to replay, by a name that says their setting."""
    import optuna

    from autofreeze.study import warmup_steps

    out: dict[str, Callable[[], Any]] = {}
    for frac in FRACTIONS:
        warm = warmup_steps(frac, epochs)
        for pct in (75.0, 50.0, 25.0):  # the share of trials kept at each judged epoch
            name = f"keep top {pct:g} %, prune_after {frac:g} (epoch {warm})"
            out[name] = lambda p=pct, w=warm: optuna.pruners.PercentilePruner(
                p, n_startup_trials=3, n_warmup_steps=w
            )
    for r in sorted({1, 2, max(1, epochs // 2)}):
        out[f"successive halving, min_resource {r}"] = lambda r=r: (
            optuna.pruners.SuccessiveHalvingPruner(min_resource=r, reduction_factor=3)
        )
    out["hyperband, min_resource 1"] = lambda: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=epochs
    )
    return out


def replay(curves: list[list[float]], make: Callable[[], Any]) -> tuple[int, int, list[int]]:
    """Tell ``curves`` (trials in order) to a fresh study; (epochs run, epochs in all, pruned)."""
    import optuna

    # a fixed name: Hyperband assigns brackets by hashing it with the trial number
    study = optuna.create_study(study_name="replay", direction="maximize", pruner=make())
    ran = total = 0
    pruned = []
    for i, curve in enumerate(curves):
        trial = study.ask()
        total += len(curve)
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, step=epoch)
            ran += 1
            if epoch < len(curve) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned.append(i)
                break
        else:
            study.tell(trial, curve[-1])
    return ran, total, pruned


def calibrate(curves: dict[str, list[list[float]]]) -> list[dict[str, Any]]:
    """Every candidate's savings and losses over the tasks' curves."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = max(len(c) for task in curves.values() for c in task)
    rows = []
    for name, make in candidates(epochs).items():
        ran = total = lost_best = lost_top3 = worst_top3 = 0
        for task in curves.values():
            r, t, pruned = replay(task, make)
            ran, total = ran + r, total + t
            order = sorted(range(len(task)), key=lambda i: -task[i][-1])
            best_value = task[order[0]][-1]
            # a tie for the best value counts as lost only when every tied trial is pruned
            best = {i for i in order if task[i][-1] == best_value}
            lost_best += best <= set(pruned)
            lost = len(set(order[:3]) & set(pruned))
            lost_top3 += lost
            worst_top3 = max(worst_top3, lost)
        rows.append(
            {
                "pruner": name,
                "saved": 1 - ran / total,
                "lost_best": lost_best,
                "lost_top3": lost_top3,
                "worst_top3": worst_top3,
            }
        )
    return rows


def pick(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most saving pruner that loses no task's best trial and at most one top-3 trial per
    task; ties go to the later warm-up (the safer one)."""
    safe = [r for r in rows if r["lost_best"] == 0 and r["worst_top3"] <= 1] or rows
    return max(safe, key=lambda r: (round(r["saved"], 3), -r["lost_top3"]))


def report_lines(rows: list[dict[str, Any]], n_tasks: int) -> list[str]:
    chosen = pick(rows)
    lines = [
        "| pruner | epochs saved | tasks whose best trial is pruned | top-3 trials pruned |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        mark = " **(chosen)**" if r is chosen else ""
        lines.append(
            f"| {r['pruner']}{mark} | {r['saved']:.0%} | {r['lost_best']} of {n_tasks} | "
            f"{r['lost_top3']} of {3 * n_tasks} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=CURVES)
    args = parser.parse_args()
    saved = json.loads(args.curves.read_text())
    write(saved["curves"], saved["command"])


def write(curves: dict[str, list[list[float]]], command: str) -> None:
    rows = calibrate(curves)
    epochs = max(len(c) for task in curves.values() for c in task)
    n = sum(len(task) for task in curves.values())
    body = [
        f"Command: `.venv/bin/python benchmarks/pruning.py` on the curves that `{command}` "
        f"saved ({n} unpruned trials of {len(curves)} tasks, {epochs} epochs each); machine: "
        f"{platform.machine()}, {os.cpu_count()} cores. Each pruner is replayed by Optuna on "
        "the trials in their original order; a trial it stops does not run its later epochs.",
        "",
        *report_lines(rows, len(curves)),
        "",
        f"Chosen rule: the most saving pruner that prunes no task's best trial and at most one of "
        f"a task's three best: {pick(rows)['pruner']}.",
    ]
    write_section("Pruning calibration", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
