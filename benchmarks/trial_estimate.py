"""How well the probe's pass predicts a trial's compute: the estimate that sizes a time
budget's first plans (:func:`autofreeze.study.allowance.trial_estimate`, used by
:func:`autofreeze.study.allowance.first_plans_room`).

Before any trial runs, a study with a time budget guesses one trial's compute from the probe's
pass (``probe seconds x TRAINING_PER_FORWARD x epochs``) and queues as many first plans as that
guess says the budget surely runs. A guess too high queues too few: the warm-start benchmark
found a room of about one first plan where 5 to 35 trials ran. This script reads the studies
that ``benchmarks/search_quality.py --keep`` left and sets each study's recorded probe seconds
against the seconds its trials recorded:

    .venv/bin/python benchmarks/search_quality.py --methods autofreeze --seeds 0 --again \\
        --keep /tmp/sqkeep --results /tmp/sq_cal.json
    .venv/bin/python benchmarks/trial_estimate.py --keep /tmp/sqkeep

(the first command re-runs autofreeze into a copy of a results file that holds the vanilla
loop's T, e.g. ``cp benchmarks/results/search_quality_side.json /tmp/sq_cal.json``; the second
writes the section "Trial estimate" of docs/benchmarks.md). Both the probe and the trials ran
in the same process one after the other, so the ratio does not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from autofreeze.study import records  # noqa: E402
from autofreeze.study.allowance import TRAINING_PER_FORWARD  # noqa: E402
from autofreeze.study.storage import load_existing_study  # noqa: E402
from benchmarks._report import write_section  # noqa: E402

FIRST = (records.BASELINE, records.PRIOR, records.PORTFOLIO, records.WARM)


def measure(db: Path) -> dict[str, float | int | str] | None:
    """One kept study: its probe's seconds and its trials' seconds per epoch in probe passes."""
    url = f"sqlite:///{db}"
    names = optuna.study.get_all_study_names(url)
    if not names:
        return None
    study = load_existing_study(url, names[0])
    probe = records.probe(study) or {}
    seconds = probe.get("seconds")
    epochs = _epochs(db)
    if not seconds or not epochs:
        return None
    done = [
        (t, s)
        for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        if (s := records.seconds(t))
    ]
    first = [s for t, s in done if any(k in t.user_attrs for k in FIRST)]
    if not first:
        return None
    per = seconds * epochs
    return {
        "task": db.parent.name.rsplit("_", 2)[0],
        "probe": seconds,
        "first": len(first),
        "trials": len(done),
        "first_mean": statistics.mean(first) / per,
        "first_max": max(first) / per,
        "all_median": statistics.median(s for _, s in done) / per,
        "full": statistics.mean(full) / per
        if (full := [s for t, s in done if t.params.get("boundary") == 0])
        else None,
    }


def _epochs(db: Path) -> int | None:
    """The study config's epochs (``[training] epochs``) next to the database."""
    import tomllib

    config = db.parent / "study.toml"
    if not config.exists():
        return None
    return tomllib.loads(config.read_text()).get("training", {}).get("epochs")


def section(rows: list[dict], command: str) -> str:
    lines = [
        f"`{command}` on {platform.machine()}, {platform.python_version()}, reading the studies "
        "that `benchmarks/search_quality.py --methods autofreeze --keep DIR` left (seed 0, "
        "every task). A trial's compute, in probe passes per epoch (trial seconds / (probe "
        "seconds x epochs)); the estimate uses "
        f"**{TRAINING_PER_FORWARD}** (`TRAINING_PER_FORWARD` in autofreeze/study/allowance.py).",
        "",
        "| task | probe s | first plans | first plans: mean | first plans: max | every trial: "
        "median | boundary 0: mean | estimate / first-plan mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['probe']:.3f} | {r['first']} of {r['trials']} | "
            f"{r['first_mean']:.2f} | {r['first_max']:.2f} | {r['all_median']:.2f} | "
            f"{'-' if r['full'] is None else format(r['full'], '.2f')} | "
            f"{TRAINING_PER_FORWARD / r['first_mean']:.2f} |"
        )
    means = [r["first_mean"] for r in rows]
    over = [TRAINING_PER_FORWARD / m for m in means]
    lines += [
        "",
        f"Over {len(rows)} tasks the first plans cost {min(means):.2f} to {max(means):.2f} probe "
        f"passes an epoch (median {statistics.median(means):.2f}); the estimate is "
        f"{min(over):.2f} to {max(over):.2f} times that (1 is exact, above 1 queues fewer first "
        "plans than run, below 1 risks a first plan still waiting when the budget ends). A "
        "plan's cost follows its boundary (frozen blocks are cached): the full fine-tunes "
        "(boundary 0) are the dearest first plans.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, required=True, help="search_quality's --keep folder")
    parser.add_argument(
        "--ran-with", type=float, help="TRAINING_PER_FORWARD when the kept studies ran, if other"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = [
        r for db in sorted(args.keep.glob("*_autofreeze/*.db")) if (r := measure(db)) is not None
    ]
    if not rows:
        sys.exit(f"no autofreeze study with a probe in {args.keep}: run search_quality --keep")
    for r in rows:
        print(
            f"{r['task']}: first plans {r['first_mean']:.2f} (max {r['first_max']:.2f}) probe "
            "passes an epoch",
            file=sys.stderr,
        )
    write_section(
        "Trial estimate", section(rows, f"benchmarks/trial_estimate.py --keep {args.keep}")
    )


if __name__ == "__main__":
    main()
