"""Search quality at equal wall time: does autofreeze hand over a better model (accuracy on a
held-out test split that no search sees) than the Optuna loops a user would write?

Run (the whole benchmark, about an hour on 2 cores; see docs/benchmarks.md):
    .venv/bin/python benchmarks/search_quality.py
    .venv/bin/python benchmarks/search_quality.py --report
or in chunks that append to the results file (re-running a chunk skips what it holds):
    .venv/bin/python benchmarks/search_quality.py --tasks small_similar,photos --seeds 0
    .venv/bin/python benchmarks/search_quality.py --methods autofreeze --again
``--report`` writes the section "Search quality" of docs/benchmarks.md and the figure
docs/figures/search_quality_anytime.png from the results file alone (no training); with
``--pruning`` it also saves the vanilla loops' learning curves for benchmarks/pruning.py and
rewrites its section.

For each task and seed, one method at a time: the vanilla loop runs first (a fixed number of
trials, per task); its wall time T is the budget of every other method on that task and seed.
Methods (benchmarks/_quality_methods.py): vanilla, random, tpe_hyperband, top_after_one_epoch
and autofreeze. Each search sees only the train and validation splits. After every finished
trial each method's current choice is recorded; the choices at 1/6, 1/3, 1/2, 2/3 and all of T
(and at the method's own end) are trained again on the train split and evaluated on the test
split, each distinct plan once per task and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._quality_methods import (  # noqa: E402
    METHODS,
    MethodRun,
    Setup,
    load_study,
    run_autofreeze,
    run_user_loop,
)
from benchmarks._quality_tasks import TASKS, Plugin, missing  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_quality.json"
FRACTIONS = (1 / 6, 1 / 3, 1 / 2, 2 / 3, 1.0)  # of T, where the test accuracy is measured
VERSION = 2  # of the results file; version 1 (one row per task) is replaced, not appended to


# -- the results file ----------------------------------------------------------------------------
def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What must be equal for runs to sit in one results file."""
    return {
        "epochs": args.epochs,
        "trials": args.trials,
        "test_seeds": args.test_seeds,
        "threads": args.threads,
    }


def load_results(
    path: Path,
    wanted: dict[str, Any],
    version: int = VERSION,
    fresh: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results so far, or a new file (with ``fresh``'s keys besides runs and tests);
    refuse to mix runs of other settings. benchmarks/warm_start.py keeps its results alike."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("version") == version:
            if saved["settings"] != wanted:
                raise SystemExit(
                    f"{path} holds runs with settings {saved['settings']}, not {wanted}: use "
                    "the same settings (--epochs, --trials, ...), or another --results file"
                )
            return saved
        print(f"{path}: an older format; starting a new file", file=sys.stderr)
    new = {"version": version, "settings": wanted, "machine": machine(), "runs": {}, "tests": {}}
    return {**new, **(fresh or {})}


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results) + "\n")
    tmp.replace(path)


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = f" ({names[0]})" if names else ""
    return f"{platform.machine()}{model}, {os.cpu_count()} cores, CPU only"


def run_key(task: str, seed: int, method: str) -> str:
    return f"{task}|{seed}|{method}"


# -- the test split ------------------------------------------------------------------------------
def choice_at(run: dict[str, Any], seconds: float) -> dict[str, Any] | None:
    """The plan ``run`` would hand over if stopped at ``seconds`` (None: none yet)."""
    choice = None
    for event in run["events"]:
        if event["seconds"] > seconds:
            break
        choice = event["choice"]
    return choice


def plan_key(task: str, seed: int, plan: dict[str, Any]) -> str:
    return f"{task}|{seed}|{json.dumps(plan, sort_keys=True)}"


class TestSplit:
    """Test accuracies of plans, each (task, seed, plan) trained once and kept in the results."""

    def __init__(self, results: dict[str, Any], seeds: int, said: set[str]) -> None:
        self.tests, self.seeds, self.said = results["tests"], seeds, said

    def accuracy(self, setup: Setup, plan: dict[str, Any]) -> float:
        key = plan_key(setup.name, setup.seed, plan)
        if key not in self.tests:
            self.tests[key] = self._train(setup, plan)
        return self.tests[key]

    def _train(self, setup: Setup, plan: dict[str, Any]) -> float:
        """The plan trained again on the train split with the task's seed (the trial's) and
        the next ``seeds - 1``, on the vanilla loop's config (no cache): the mean accuracy."""
        from autofreeze.plan import FreezePlan
        from autofreeze.progress import quiet
        from autofreeze.runs.checkpoint import train_checkpoint

        cfg = load_study(setup, {"n_trials": 1}, user=True, said=self.said)
        values = []
        for s in range(self.seeds):
            training = cfg.training.model_copy(update={"seed": setup.seed + s})
            run = cfg.model_copy(update={"training": training})
            info = train_checkpoint(
                run, FreezePlan.from_dict(plan), setup.folder / "model", progress=quiet
            )
            values.append(float(info["metrics"]["test_accuracy"]))
        return sum(values) / len(values)

    def measure(self, setup: Setup, run: dict[str, Any], budget: float) -> None:
        """The test accuracy of ``run``'s choice at each fraction of ``budget`` and at its end."""
        run["anytime"] = []
        for f in FRACTIONS:
            plan = choice_at(run, f * budget)
            run["anytime"].append(None if plan is None else self.accuracy(setup, plan))
        last = run["events"][-1]["choice"] if run["events"] else None
        run["end_test"] = None if last is None else self.accuracy(setup, last)


# -- running -------------------------------------------------------------------------------------
def run_method(setup: Setup, method: str, budget: float, trials: int, said: set[str]) -> MethodRun:
    if method == "vanilla":
        return run_user_loop(setup, method, trials, said)
    if method == "autofreeze":
        return run_autofreeze(setup, budget, said)
    return run_user_loop(setup, method, budget, said)


def warm_up(setup: Setup, said: set[str]) -> None:
    """Decode the task's data and build the backbone once before any clock starts (the
    process keeps decoded data; the first method would otherwise pay for every other)."""
    from autofreeze.progress import quiet
    from autofreeze.runs.prepare import prepare

    prepare(load_study(setup, {"n_trials": 1}, user=True, said=said), progress=quiet)


def drop_stale(runs: dict[str, Any], name: str, seed: int) -> None:
    """A new vanilla run sets a new T: the other methods' runs had the old one as budget."""
    for k in [k for k in runs if k.startswith(f"{name}|{seed}|")]:
        if k != run_key(name, seed, "vanilla"):
            print(f"dropped {k}: its budget was the vanilla run now replaced", file=sys.stderr)
            del runs[k]


def show(name: str, seed: int, run: dict[str, Any]) -> None:
    def acc(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(
        f"{name} seed {seed} {run['method']}: {run['seconds']:.1f} s "
        f"({run['seconds'] / run['budget']:.2f} T), {run['info'].get('trials', 0)} trials, "
        f"test at T {acc(run['anytime'][-1])}, at its end {acc(run['end_test'])}",
        flush=True,
    )


def run_task_seed(name: str, seed: int, args: argparse.Namespace, ctx: dict[str, Any]) -> None:
    """Every wanted method on one task and seed; the results file is saved after each."""
    runs = ctx["results"]["runs"]
    wanted = [m for m in METHODS if m in args.methods.split(",")]  # vanilla first
    todo = [m for m in wanted if args.again or run_key(name, seed, m) not in runs]
    if not todo:
        return

    def setup(method: str) -> Setup:
        folder = ctx["folder"] / f"{name}_{seed}_{method}"
        return Setup(name, TASKS[name], seed, args.epochs, ctx["weights"], folder)

    warm_up(setup("warm"), ctx["said"])
    for method in todo:
        if method == "vanilla":
            drop_stale(runs, name, seed)
        vanilla = runs.get(run_key(name, seed, "vanilla"))
        if method != "vanilla" and vanilla is None:
            raise SystemExit(f"{name} seed {seed}: run the vanilla loop first (--methods vanilla)")
        budget = 0.0 if vanilla is None or method == "vanilla" else vanilla["seconds"]
        trials = args.trials or TASKS[name].trials
        run = run_method(setup(method), method, budget, trials, ctx["said"]).to_dict()
        run["budget"] = budget or run["seconds"]
        ctx["tests"].measure(setup(method), run, run["budget"])
        if not args.keep:  # its study and caches (the prefix cache is on disk)
            shutil.rmtree(setup(method).folder, ignore_errors=True)
        runs[run_key(name, seed, method)] = run
        save(args.results, ctx["results"])
        show(name, seed, run)


def run(args: argparse.Namespace) -> None:
    import optuna
    import torch

    from autofreeze.config import load_config
    from autofreeze.plugins.registry import get_registry
    from autofreeze.progress import quiet
    from autofreeze.runs.pretrain import ensure_weights

    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    bad = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown or bad:
        raise SystemExit(f"unknown task or method: {', '.join(unknown + bad)}")
    lacking = missing(tasks)
    if lacking:
        needs = ", ".join(t for t in tasks if set(TASKS[t].needs) & set(lacking))
        raise SystemExit(
            f"tasks {needs} need {', '.join(lacking)}: pip install scikit-image "
            "(or leave them out with --tasks)"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    results = load_results(args.results, settings(args))
    said: set[str] = set()
    weights = ensure_weights(load_config(ROOT / "studies" / "quickstart.toml"), quiet)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, get_registry().plugin(Plugin(), name="bench"):
        ctx = {
            "results": results,
            "folder": Path(args.keep or tmp),
            "weights": str(weights),
            "said": said,
            "tests": TestSplit(results, args.test_seeds, said),
        }
        for name in tasks:
            for seed in args.seeds:
                run_task_seed(name, seed, args, ctx)
    print(
        f"done in {time.perf_counter() - t0:.0f} s; results in {args.results}; "
        "write the section with --report",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated")
    parser.add_argument("--seeds", default=[0, 1, 2], type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--trials", type=int, help="the vanilla loop's trials on every task (default: per task)"
    )
    parser.add_argument("--test-seeds", type=int, default=1, help="retrainings per chosen plan")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (on a shared 2-core machine two made timings erratic)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--again", action="store_true", help="re-run what the results hold")
    parser.add_argument("--keep", help="keep the studies and caches in this folder")
    parser.add_argument(
        "--report", action="store_true", help="only write the section from the results file"
    )
    parser.add_argument(
        "--pruning",
        action="store_true",
        help="with --report: also the vanilla curves for benchmarks/pruning.py and its section",
    )
    args = parser.parse_args()
    if args.report:
        from benchmarks._quality_report import report

        return report(args.results, args.pruning)
    return run(args)


if __name__ == "__main__":
    main()
