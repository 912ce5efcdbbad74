"""Warm starts and the portfolio at equal wall time: does a study that starts from a sibling
task's study (``[search] warm_start``), from the portfolio of first plans (``[study]
first_plans = "portfolio"``) or from both hand over a better model sooner than a cold start?

Run (30 minutes on 2 cores for 9 tasks and 2 seeds; see docs/benchmarks.md, "Warm starts and
the portfolio"):
    .venv/bin/python benchmarks/warm_start.py --seeds 0,1
    .venv/bin/python benchmarks/warm_start.py --report
Resumable: the results file is saved after every run; re-running skips what it holds
(``--again portfolio,both`` runs those methods again, e.g. with another ``--portfolio-on``).
Each task's portfolio is chosen without the task and its sibling (``--portfolio-without
sibling``, the default since 2026-12-06: a user's own earlier study is not in the shipped
portfolio); ``--earlier version`` warm-starts each task from its own study on the other seed
(a new version of its dataset) instead of its sibling's.

On the tasks of benchmarks/search_quality.py, for each task t and seed k, with the vanilla
loop's wall time T(t, k) from that benchmark's results as every method's budget (the vanilla
loop is not run again; its curve is copied for reference):

- ``cold``: autofreeze's study with ``first_plans = "recipes"`` (the textbook recipes, the
  default until these runs);
- ``warm``: the same, with ``[search] warm_start`` = the study of t's sibling (:data:`SIBLINGS`)
  of seed k: cold's study on the sibling with budget T(sibling, k), built once
  per sibling and seed in ``--sources`` before any clock starts and reused;
- ``portfolio``: ``first_plans = "portfolio"``, the portfolio chosen without t (leave one task
  out, by benchmarks/portfolio.py's selection from its results file, on the other tasks' test
  or validation accuracy: ``--portfolio-on``): the shipped members are replaced by these
  in-process for the run (``autofreeze.search.baselines.members``);
- ``both``: the warm start and that portfolio;
- ``mixed``: ``first_plans = "both"``: that portfolio and the textbook recipes, without a warm
  start.

Each choice after every finished trial is recorded, and the choices at 1/6 .. 1 of T are
trained again on the train split and evaluated on the held-out test split exactly as
benchmarks/search_quality.py does (its test accuracies are reused where a plan is the same).
``--report`` writes the section and docs/figures/warm_start_anytime.png from the results file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._quality_methods import Setup, run_autofreeze  # noqa: E402
from benchmarks._quality_tasks import TASKS, Plugin, missing  # noqa: E402
from benchmarks.search_quality import (  # noqa: E402
    RESULTS as SOURCE,
)
from benchmarks.search_quality import (  # noqa: E402
    TestSplit,
    plan_key,
    run_key,
    save,
    warm_up,
)
from benchmarks.search_quality import load_results as load_kept  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "warm_start.json"
PORTFOLIO = ROOT / "benchmarks" / "results" / "portfolio.json"
COMMAND = ".venv/bin/python benchmarks/warm_start.py"
TITLE = "Warm starts and the portfolio"
METHODS = ("cold", "warm", "portfolio", "both", "mixed")
ORDER = ("vanilla", *METHODS)  # the report's methods; vanilla's runs are copied
K = 6  # portfolio members (the shipped size)
VERSION = 1
# each task's sibling: the nearest other task on the same source backbone, whose study a user
# would have run before
SIBLINGS = {
    "small_similar": "larger_similar",
    "larger_similar": "small_similar",
    "few_labels": "small_similar",
    "inverted": "rotated",
    "rotated": "inverted",
    "parity": "small_similar",
    "all_digits": "small_similar",
    "photos": "photos_64",
    "photos_64": "photos",
}
# --earlier version: the earlier study is the same task's on the other seed (another draw of its
# images, as a new version of a dataset is), instead of the sibling task's on the same seed


def source_of(task: str, seed: int, results: dict[str, Any]) -> tuple[str, int]:
    """The task and seed of the earlier study a warm start of ``task`` and ``seed`` reads."""
    if results.get("earlier") == "version":
        seeds = results["seeds"]
        return task, next(s for s in seeds if s != seed)
    return SIBLINGS[task], seed


def source_label(task: str, results: dict[str, Any]) -> str:
    """The earlier study of ``task``, in words (the report's tables)."""
    return "its other seed" if results.get("earlier") == "version" else SIBLINGS[task]


# -- the results file ----------------------------------------------------------------------------
def settings(args: argparse.Namespace, source: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for runs to sit in one results file."""
    return {
        **source["settings"],
        "scale": args.scale,
        "portfolio_k": K,
        "vanilla_from": args.vanilla_from.name,
        # runs of a portfolio without the task only (before 2026-12-06) keep their settings
        **({"portfolio_without": "sibling"} if args.portfolio_without == "sibling" else {}),
        **({"earlier": "version"} if args.earlier == "version" else {}),
    }


def load_results(path: Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """The results so far, kept as search_quality keeps its own, with the sibling studies,
    the leave-one-task-out portfolios and the seconds measured besides."""
    fresh = {"siblings": SIBLINGS, "sources": {}, "portfolios": {}, "seconds": 0.0}
    return load_kept(path, wanted, VERSION, fresh)


class Tests(TestSplit):
    """search_quality's test split, its accuracies reused where a plan is the same (copied into
    this results file, so that the report needs no other file)."""

    def __init__(self, results: dict[str, Any], known: dict[str, float], said: set[str]) -> None:
        super().__init__(results, results["settings"]["test_seeds"], said)
        self.known = known
        self.reused = 0

    def accuracy(self, setup: Setup, plan: dict[str, Any]) -> float:
        key = plan_key(setup.name, setup.seed, plan)
        if key not in self.tests and key in self.known:
            self.tests[key] = self.known[key]
            self.reused += 1
        return super().accuracy(setup, plan)


# -- the portfolio chosen without the task -------------------------------------------------------
def loto_portfolios(path: Path, on: str, without: str) -> dict[str, list[dict[str, Any]]]:
    """For each task, the portfolio of :data:`K` members chosen without it (``without`` =
    "sibling": without its sibling as well), as member dicts, by benchmarks/portfolio.py's
    selection from its results file (on the other tasks' ``on`` accuracy: ``val`` or ``test``)."""
    from benchmarks.portfolio import covered, leave_one_out

    results = json.loads(path.read_text())
    tasks, seeds = covered(results)
    by_name = {m["name"]: m for m in results["pool"]}
    also = SIBLINGS if without == "sibling" else None
    chosen = {t: g["chosen"] for t, g in leave_one_out(results, K, on, also).items()}
    print(
        f"portfolios chosen without each task{' and its sibling' if also else ''} from "
        f"{path.name} on the other tasks' {on} accuracy ({len(tasks)} tasks, seeds "
        f"{', '.join(map(str, seeds))})",
        file=sys.stderr,
    )
    return {t: [by_name[n] for n in names] for t, names in chosen.items()}


@contextlib.contextmanager
def portfolio_of(members: list[dict[str, Any]] | None) -> Iterator[None]:
    """The product's portfolio replaced by ``members`` for the duration (None: as shipped)."""
    if members is None:
        yield
        return
    from autofreeze import portfolio
    from autofreeze.search import baselines

    chosen = tuple(portfolio.Member.from_dict(m) for m in members)
    saved = baselines.members
    baselines.members = lambda: chosen  # type: ignore[assignment]
    try:
        yield
    finally:
        baselines.members = saved  # type: ignore[assignment]


# -- the sibling studies -------------------------------------------------------------------------
def source_study(task: str, seed: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """The autofreeze study of ``task`` and ``seed`` with budget T(task, seed) and the textbook
    recipes as first plans (a study run before there was a portfolio; the shipped portfolio was
    chosen on every task, the warm start's own among them), in its own SQLite file under
    ``--sources``: built once, reused (never timed as any method's)."""
    key = f"{task}|{seed}"
    folder = ctx["sources"] / f"{task}_{seed}"
    known = ctx["results"]["sources"].get(key)
    url = f"sqlite:///{folder / f'{task}_{seed}.db'}"
    if known and (folder / f"{task}_{seed}.db").exists():
        return {**known, "storage": url}
    shutil.rmtree(folder, ignore_errors=True)  # a study cut short is built again
    budget = ctx["args"].scale * ctx["vanilla"][run_key(task, seed, "vanilla")]["seconds"]
    setup = Setup(task, TASKS[task], seed, ctx["epochs"], ctx["weights"], folder)
    warm_up(setup, ctx["said"])
    run = run_autofreeze(setup, max(10.0, budget), ctx["said"], {"first_plans": "recipes"})
    final = run.events[-1] if run.events else None
    known = {
        "study": f"{task}_{seed}",
        "budget": round(budget, 2),
        "seconds": round(run.seconds, 2),
        "trials": run.info.get("trials"),
        "best_value": None if final is None else final.value,
        "best_trial": None if final is None else final.trial,
        "best_plan": None if final is None else final.choice,
        "winner": run.info.get("winner"),
    }
    ctx["results"]["sources"][key] = known
    save(ctx["args"].results, ctx["results"])
    print(f"source {task} seed {seed}: {run.seconds:.1f} s, best {known['best_value']}", flush=True)
    return {**known, "storage": url}


# -- the runs ------------------------------------------------------------------------------------
def method_keys(method: str, source: dict[str, Any] | None) -> tuple[dict, dict]:
    """The ``[study]`` and ``[search]`` keys of ``method``."""
    plans = {"portfolio": "portfolio", "both": "portfolio", "mixed": "both"}
    study = {"first_plans": plans.get(method, "recipes")}
    search = {}
    if method in ("warm", "both") and source is not None:
        search["warm_start"] = [{"storage": source["storage"], "study": source["study"]}]
    return study, search


def first_trials(setup: Setup) -> list[str]:
    """``kind: name`` of the study's first plans (warm, portfolio, recipe, prior), in order."""
    import optuna

    from autofreeze.study import records

    name = f"{setup.name}_{setup.seed}"
    url = f"sqlite:///{setup.folder / f'{name}.db'}"
    study = optuna.load_study(study_name=name, storage=url)
    return [
        f"{records.kind(t)}: {records.name(t)}"
        for t in study.get_trials(deepcopy=False)
        if records.kind(t) != records.SEARCHED and records.reevaluation_of(t) is None
    ]


def run_one(setup: Setup, method: str, budget: float, ctx: dict[str, Any]) -> dict[str, Any]:
    earlier = source_of(setup.name, setup.seed, ctx["results"])
    source = source_study(*earlier, ctx) if method in ("warm", "both") else None
    members = ctx["portfolios"][setup.name] if method in ("portfolio", "both", "mixed") else None
    study, search = method_keys(method, source)
    with portfolio_of(members):
        run = run_autofreeze(setup, budget, ctx["said"], study, search, method).to_dict()
    run["budget"] = budget
    run["info"]["seed"] = setup.seed
    run["info"]["first"] = first_trials(setup)
    if source is not None:
        run["info"]["warm_from"] = source["study"]
    if members is not None:
        run["info"]["portfolio"] = [m["name"] for m in members]
        run["info"]["portfolio_on"] = ctx["args"].portfolio_on
        run["info"]["portfolio_without"] = ctx["args"].portfolio_without
    run["info"]["load"] = round(os.getloadavg()[0], 2)  # other work on the machine, and this
    return run


def show(name: str, seed: int, run: dict[str, Any]) -> None:
    at_t = run["anytime"][-1]
    print(
        f"{name} seed {seed} {run['method']}: {run['seconds']:.1f} s "
        f"({run['seconds'] / run['budget']:.2f} T), {run['info'].get('trials', 0)} trials, "
        f"test at T {'-' if at_t is None else f'{at_t:.3f}'}, winner {run['info'].get('winner')}",
        flush=True,
    )


def run_task_seed(name: str, seed: int, ctx: dict[str, Any]) -> None:
    """Every method on one task and seed; the results file is saved after each."""
    results, args = ctx["results"], ctx["args"]
    vanilla = ctx["vanilla"].get(run_key(name, seed, "vanilla"))
    if vanilla is None:
        print(
            f"{name} seed {seed}: no vanilla run in {ctx['args'].vanilla_from.name}; skipped",
            file=sys.stderr,
        )
        return
    results["runs"][run_key(name, seed, "vanilla")] = {
        **vanilla,
        "from": ctx["args"].vanilla_from.name,
    }
    for m in args.again.split(",") if args.again else []:
        results["runs"].pop(run_key(name, seed, m), None)
    todo = [m for m in args.methods.split(",") if run_key(name, seed, m) not in results["runs"]]
    if not todo:
        return
    budget = max(10.0, args.scale * vanilla["seconds"])
    if any(m in ("warm", "both") for m in todo):  # before the task's data is decoded
        source_study(*source_of(name, seed, results), ctx)

    def setup(method: str) -> Setup:
        folder = ctx["folder"] / f"{name}_{seed}_{method}"
        return Setup(name, TASKS[name], seed, ctx["epochs"], ctx["weights"], folder)

    warm_up(setup("prepare"), ctx["said"])
    for method in todo:
        run = run_one(setup(method), method, budget, ctx)
        ctx["tests"].measure(setup(method), run, budget)
        shutil.rmtree(setup(method).folder, ignore_errors=True)
        results["runs"][run_key(name, seed, method)] = run
        save(args.results, results)
        show(name, seed, run)


def run(args: argparse.Namespace) -> None:
    import optuna
    import torch

    from autofreeze.config import load_config
    from autofreeze.plugins.registry import get_registry
    from autofreeze.progress import quiet
    from autofreeze.runs.pretrain import ensure_weights

    tasks = args.tasks.split(",")
    bad = [t for t in tasks if t not in TASKS] + [
        m for m in args.methods.split(",") if m not in METHODS
    ]
    if bad or missing(tasks):
        raise SystemExit(f"unknown task or method, or missing modules: {bad or missing(tasks)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    source = json.loads(args.vanilla_from.read_text())
    if args.earlier == "version":  # the earlier study is the task's own: leave the task out
        if len(args.seeds) != 2:
            raise SystemExit("--earlier version takes two seeds, each the other's earlier study")
        args.portfolio_without = "task"
    results = load_results(args.results, settings(args, source))
    if args.earlier == "version":
        results["earlier"], results["seeds"] = "version", args.seeds
    portfolios = loto_portfolios(args.portfolio, args.portfolio_on, args.portfolio_without)
    for task in tasks:
        results["portfolios"][task] = [m["name"] for m in portfolios[task]]
    said: set[str] = set()
    weights = ensure_weights(load_config(ROOT / "studies" / "quickstart.toml"), quiet)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, get_registry().plugin(Plugin(), name="bench"):
        ctx = {
            "args": args,
            "results": results,
            "vanilla": {k: v for k, v in source["runs"].items() if k.endswith("|vanilla")},
            "portfolios": portfolios,
            "folder": Path(tmp),
            "sources": Path(args.sources),
            "epochs": source["settings"]["epochs"],
            "weights": str(weights),
            "said": said,
            "tests": Tests(results, source["tests"], said),
        }
        for seed in args.seeds:  # every task of a seed before the next seed
            for name in tasks:
                run_task_seed(name, seed, ctx)
                results["seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                save(args.results, results)
    print(
        f"done: {results['seconds']:.0f} s measured in all; {ctx['tests'].reused} test "
        f"accuracies reused from {args.vanilla_from.name}; write the section with --report",
        file=sys.stderr,
    )


# -- the report ----------------------------------------------------------------------------------
def fraction(value: float) -> str:
    return "not by T" if math.isinf(value) else f"{value:.2f} T"


def base(t: Any) -> str:
    """The cold study the others are measured against: ``cold`` (the textbook recipes) where the
    results hold it, else ``mixed`` (today's default, the portfolio and the recipes)."""
    return "cold" if "cold" in t.methods else "mixed"


def noise(t: Any, task: str) -> float:
    """The task's noise: the half-width of the cold study's 95 % t-interval at T over seeds."""
    from benchmarks._quality_report import interval

    return interval(t.at(task, base(t)))[1]


def gap(t: Any, task: str, method: str) -> float:
    """``method``'s mean test accuracy at T minus the cold study's."""
    return t.mean_at(task, method) - t.mean_at(task, base(t))


def ran(t: Any, among: tuple[str, ...] = METHODS) -> list[str]:
    """The methods of ``among`` that the results hold (a run of the benchmark may skip some)."""
    return [m for m in among if m in t.methods]


def others(t: Any) -> list[str]:
    """The methods measured against the cold study."""
    return [m for m in ran(t) if m != base(t)]


def bar_line(t: Any) -> str:
    """The issue's bar for the warm start (``warm``, else ``both`` where a run has no
    ``warm``), said plainly."""
    from benchmarks._quality_report import reach

    warm = next((m for m in ("warm", "both") if m in t.methods), None)
    if warm is None:
        return "**The bar** needs a warm start (`warm` or `both`): this run has none."
    cold = base(t)
    median = statistics.median(reach(t, task, warm, cold) for task in t.tasks)
    worse = [task for task in t.tasks if gap(t, task, warm) < -noise(t, task)]
    return (
        f"**The bar** (for `{warm}`"
        + (
            "; here from the same task's earlier study, not the issue's sibling task"
            if t.results.get("earlier") == "version"
            else ""
        )
        + f"): a warm start from a sibling task reaches {cold}'s final "
        "test accuracy in at "
        f"most half its wall time, median over tasks: {'met' if median <= 0.5 else 'not met'} "
        f"({fraction(median)}); and never ends worse than {cold} by more than the task's noise: "
        + ("met" if not worse else f"not met ({', '.join(worse)})")
        + "."
    )


def verdict_lines(t: Any) -> list[str]:
    from benchmarks._quality_report import interval, reach

    cold = base(t)
    own = {task: reach(t, task, cold, cold) for task in t.tasks}
    lines = [
        bar_line(t),
        "",
        f"For scale, **{cold} itself** reaches its own final test accuracy at "
        f"{fraction(statistics.median(own.values()))}, median over tasks (per task: "
        + ", ".join(f"{task} {fraction(v)}" for task, v in own.items())
        + "): a method that ran exactly as cold would score that.",
        "",
    ]
    for m in others(t):
        times = {task: reach(t, task, m, cold) for task in t.tasks}
        median = statistics.median(times.values())
        gaps = {task: gap(t, task, m) for task in t.tasks}
        worse = [task for task in t.tasks if gaps[task] < -noise(t, task)]
        wins = sum(g > 1e-9 for g in gaps.values())
        losses = [f"{task} ({g:+.3f})" for task, g in gaps.items() if g < -1e-9]
        bar = "met" if median <= 0.5 else "not met"
        lines += [
            f"**{m}**: reaches {cold}'s final test accuracy at {fraction(median)}, median over "
            f"tasks (bar 0.5 T: {bar}); per task: "
            + ", ".join(f"{task} {fraction(v)}" for task, v in times.items())
            + f". At T it is higher than {cold} in {wins} of {len(t.tasks)} tasks, lower in "
            f"{len(losses)} ({', '.join(losses) or 'none'}). Ends worse than {cold} by more than "
            f"the task's noise: {', '.join(worse) or 'no task'}.",
            "",
        ]
    if cold == "cold" and {"both", "mixed"} <= set(t.methods):  # against today's default
        times = {task: reach(t, task, "both", "mixed") for task in t.tasks}
        gaps = {task: t.mean_at(task, "both") - t.mean_at(task, "mixed") for task in t.tasks}
        noises = {task: interval(t.at(task, "mixed"))[1] for task in t.tasks}
        worse = [task for task in t.tasks if gaps[task] < -noises[task]]
        lines += [
            "**both against mixed** (the warm start against today's default cold study, the "
            "portfolio and the recipes): reaches mixed's final test accuracy at "
            f"{fraction(statistics.median(times.values()))}, median over tasks (per task: "
            + ", ".join(f"{task} {fraction(v)}" for task, v in times.items())
            + "); at T, both - mixed: "
            + ", ".join(f"{task} {g:+.3f}" for task, g in gaps.items())
            + f". Worse than mixed by more than mixed's noise: {', '.join(worse) or 'no task'}.",
            "",
        ]
    return lines[:-1]


def at_t_lines(t: Any) -> list[str]:
    from benchmarks._quality_report import cell

    head = " | ".join(t.methods)
    against = others(t)
    lines = [
        f"| task (sibling) | {head} | "
        + "".join(f"{m} - {base(t)} | " for m in against)
        + "noise |",
        "| --- | " + " | ".join("---" for _ in t.methods + against) + " | --- |",
    ]
    for task in t.tasks:
        n = t.seeds(task)
        cells = " | ".join(cell(t.at(task, m), n) for m in t.methods)
        gaps = " | ".join(f"{gap(t, task, m):+.3f}" for m in against)
        label = source_label(task, t.results)
        lines.append(f"| {task} ({label}) | {cells} | {gaps} | ± {noise(t, task):.3f} |")
    return lines


def run_lines(t: Any) -> list[str]:
    """Wall time, trials and what each method's first plans and final choices were."""
    from benchmarks._quality_report import number

    lines = [
        "| method | wall / T: median (range) | trials (mean) | first plans (mean) | chosen "
        "plan was (of the runs) | test at T | test at its end |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in ran(t):
        runs = [r for task in t.tasks for r in t.runs[task][m]]
        ratios = [r["seconds"] / r["budget"] for r in runs]
        kinds: dict[str, int] = {}
        for r in runs:
            k = kind_of(r["info"].get("winner"), r)
            kinds[k] = kinds.get(k, 0) + 1
        queued: dict[str, int] = {}
        for r in runs:
            for line in r["info"].get("first", []):
                queued[line.split(": ")[0]] = queued.get(line.split(": ")[0], 0) + 1
        first = ", ".join(f"{k} {v / len(runs):.1f}" for k, v in sorted(queued.items()))
        end = sum(t.mean_end(task, m) for task in t.tasks) / len(t.tasks)
        lines.append(
            f"| {m} | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{sum(r['info'].get('trials', 0) for r in runs) / len(runs):.1f} | {first} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            + f" | {number(t.mean_curve(m)[-1])} | {number(end)} |"
        )
    return lines


def kind_of(winner: str | None, run: dict[str, Any]) -> str:
    """What a run's chosen plan was: warm, portfolio, recipe, prior or searched."""
    if winner is None:
        return "none"
    for line in run["info"].get("first", []):
        k, name = line.split(": ", 1)
        if name == winner:
            return k
    return "searched" if winner == "searched" else winner


def settings_text(results: dict[str, Any], t: Any) -> str:
    seeds = sorted({int(k.split("|")[1]) for k in results["runs"]})
    sources = results["sources"]
    ran = [m for m in METHODS if any(k.endswith(f"|{m}") for k in results["runs"])]
    options = f"--seeds {','.join(map(str, seeds))}"
    if ran != list(METHODS):
        options += f" --methods {','.join(ran)}"
    if (vanilla := results["settings"].get("vanilla_from")) and vanilla != SOURCE.name:
        options += f" --vanilla-from benchmarks/results/{vanilla}"
    if results.get("earlier") == "version":
        options += " --earlier version"
    elif "portfolio_without" not in results["settings"] and {"portfolio", "both", "mixed"} & {*ran}:
        options += " --portfolio-without task"  # the runs before it was the default
    version = (
        "**This run's earlier studies are not sibling tasks.** Each task's warm start reads the "
        "same task's study on the other seed: another draw of its images (train, validation and "
        "test), as a new version of a dataset is. Wherever the text and tables below say "
        "sibling, read that study; each task's portfolio is chosen without the task only. Its "
        "train images may include the task's test images of the other seed, which could only "
        "leak through the choice of hyperparameters.\n\n"
        if results.get("earlier") == "version"
        else ""
    )
    return version + (
        f"Command: `{COMMAND} {options}` (resumable), then "
        f"`{COMMAND} --report`. Machine: {results['machine']}; one process, "
        f"{results['settings']['threads']} torch thread, {results['seconds'] / 60:.0f} min "
        f"of measurement (sibling studies, searches and test retraining). {len(t.tasks)} tasks "
        f"of the search-quality benchmark, {len(seeds)} seeds each "
        f"({', '.join(map(str, seeds))}); source backbone resnet10t pretrained on digits 0-4; "
        f"{results['settings']['epochs']} epochs a training.\n\n"
        "**How it is measured.** Every method on task t and seed k gets the vanilla loop's wall "
        f"time T(t, k) from the search-quality results "
        f"(`{results['settings'].get('vanilla_from', 'search_quality.json')}`) as its "
        "`[study] budget` (the vanilla "
        "loop is not run again: its curve is that benchmark's, shown for reference). `cold`: "
        'autofreeze\'s study with `first_plans = "recipes"` (the textbook recipes: the default '
        "until these runs; the default is now `mixed`'s, or `both`'s with a warm start). `warm`: "
        "the same with `[search] warm_start = [{ storage = ..., study = ... }]` naming the "
        "study of t's sibling task of the same seed (the map is in the table below; photos "
        "and photos_64 are the same patches at 32 and 64 px, so they are the closest pair). "
        "Each sibling study is cold's study on the sibling with budget "
        f"T(sibling, k), run once per sibling and seed ({len(sources)} studies) before any "
        "clock starts, kept in its SQLite file and reused; its time is no method's. "
        '`portfolio`: `first_plans = "portfolio"` with the portfolio of '
        f"{results['settings']['portfolio_k']} chosen **without task t{without(t)}** (leave "
        f"{'the two' if without(t) else 'one task'} out, "
        "benchmarks/portfolio.py's greedy selection on the other tasks' "
        f"{portfolio_rule(t)} accuracy in benchmarks/results/portfolio.json; the members are "
        "listed at the end"
        + (
            "; the sibling is left out as well, because a user's own earlier study is not "
            "among the tasks the shipped portfolio was chosen on, while a portfolio chosen on "
            "the sibling would already hold the plans a warm start reads from it"
            if without(t)
            else ""
        )
        + "): for the run the shipped members are replaced "
        "in-process by these (`autofreeze.search.baselines.members` patched). `both`: the warm "
        'start and that portfolio (`first_plans = "portfolio"`). `mixed`: that portfolio and '
        'the textbook recipes (`first_plans = "both"`), no warm start. The product queues the warm '
        "plans first (3 per earlier study), then the portfolio's or the recipes in the room "
        "the budget leaves. Only plans cross over, never weights or values; a sibling's "
        "images may overlap the task's test images (the same seed draws from the same digits), "
        "which could only leak through the choice of hyperparameters. Each method's choice "
        "after every finished trial is recorded; the choices at 1/6, 1/3, 1/2, 2/3 and all of "
        "T are trained again on the train split and evaluated on the held-out test split "
        "exactly as in Search quality (the same retraining and test split; its test "
        "accuracies are reused where a plan is the same). Shown: mean over seeds ± the "
        "half-width of the 95 % Student's t interval over seeds. **A task's noise** is that "
        "half-width for cold at T"
        + (
            "; with two seeds it is 6.4 times the gap between cold's two results (Student's t "
            "with one degree of freedom), so the noise bar is a loose one, and where cold's "
            "two seeds agree it is 0."
            if len(seeds) == 2
            else "."
        )
    )


def queue_lines(results: dict[str, Any], t: Any) -> list[str]:
    """Whether the sibling study's chosen plan ran first in the warm runs (the product orders
    the warm plans by this task's probe, and a small budget keeps only the first few)."""
    counts = {"first": 0, "later": 0, "not queued": 0}
    warm = 0
    for task in t.tasks:
        for m in ran(t, ("warm", "both")):
            for r in t.runs[task][m]:
                earlier = source_of(task, r["info"]["seed"], results)
                src = results["sources"].get(f"{earlier[0]}|{earlier[1]}", {})
                chosen = f"{src.get('study')}#{src.get('best_trial')}"
                names = [x.split(": ", 1)[1] for x in r["info"].get("first", [])]
                warm += sum(x.startswith("warm: ") for x in r["info"].get("first", []))
                at = names.index(chosen) if chosen in names else None
                counts["first" if at == 0 else "later" if at is not None else "not queued"] += 1
    n = sum(counts.values())
    room = [
        len(r["info"].get("first", [])) for task in t.tasks for m in ran(t) for r in t.runs[task][m]
    ]
    return [
        "The budget's room for first plans (what the product queued before the sampler) was "
        + (f"{min(room)} to {max(room)}" if min(room) < max(room) else f"{min(room)}")
        + f" a run. In the {n} warm and both runs the product "
        f"queued {warm / max(n, 1):.1f} warm plans a "
        f"run; the sibling study's own chosen plan ran first in {counts['first']}, later in "
        f"{counts['later']}, and was not queued in {counts['not queued']} (the warm plans are "
        "ordered by this task's probe, nearest its boundary first, and the budget keeps the "
        "first few)."
    ]


def anytime_lines(t: Any) -> list[str]:
    from benchmarks._quality_report import anytime_lines as lines

    return lines(t)


def paired_lines(t: Any) -> list[str]:
    """Per run (task and seed), each method's test accuracy at a fraction of T against the cold
    study's at the same fraction: higher / lower / equal, over the runs where both had a
    choice."""
    from benchmarks._quality_report import FRACTION_NAMES

    cold = base(t)
    lines = [
        f"| method against {cold}, same run | "
        + " | ".join(f"{f} T" for f in FRACTION_NAMES)
        + " |",
        "| --- | " + " | ".join("---" for _ in FRACTION_NAMES) + " |",
    ]
    for m in others(t):
        cells = []
        for i in range(len(FRACTION_NAMES)):
            pairs = [
                (a["anytime"][i], c["anytime"][i])
                for task in t.tasks
                for a, c in zip(t.runs[task][m], t.runs[task][cold], strict=True)
                if a["anytime"][i] is not None and c["anytime"][i] is not None
            ]
            hi = sum(a > c + 1e-9 for a, c in pairs)
            lo = sum(a < c - 1e-9 for a, c in pairs)
            cells.append(f"{hi} / {lo} / {len(pairs) - hi - lo}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def load_lines(results: dict[str, Any], t: Any) -> list[str]:
    """How busy the machine was: the runs' 1-minute load averages and the run's notes."""
    loads = [r["info"].get("load") for task in t.tasks for m in ran(t) for r in t.runs[task][m]]
    loads = [x for x in loads if x is not None]
    said = (
        f"1-minute load average at the end of each search (this process counts 1): median "
        f"{statistics.median(loads):.2f}, range {min(loads):.2f}-{max(loads):.2f}. "
        if loads
        else ""
    )
    return [said + " ".join(results.get("notes", []))] if said or results.get("notes") else []


def portfolio_info(t: Any, key: str, default: str) -> set[str]:
    """The values of ``key`` in the info of the runs that were given a portfolio."""
    return {
        r["info"].get(key, default)
        for task in t.tasks
        for m in ran(t, ("portfolio", "both", "mixed"))
        for r in t.runs[task][m]
    }


def portfolio_rule(t: Any) -> str:
    """The leave-one-task-out rule(s) of the runs: ``val`` or ``test`` (the other tasks')."""
    words = {"val": "validation", "test": "test"}
    return " and ".join(sorted(words.get(r, r) for r in portfolio_info(t, "portfolio_on", "?")))


def without(t: Any) -> str:
    """ " and its sibling" where the runs' portfolios were chosen without the sibling too."""
    rules = portfolio_info(t, "portfolio_without", "task")
    return " and its sibling" if rules == {"sibling"} else ""


def portfolio_lines(t: Any) -> list[str]:
    """The members each task's portfolio runs were given (the first seed's; the same for all
    seeds of one run of the benchmark)."""
    given = ran(t, ("portfolio", "both", "mixed"))
    if not given:
        return []
    chosen = {task: t.runs[task][given[0]][0]["info"]["portfolio"] for task in t.tasks}
    return [
        f"Portfolios chosen without each task{without(t)} (on the other tasks' "
        f"{portfolio_rule(t)} "
        "accuracy), in the order chosen: "
        + "; ".join(f"{task}: {', '.join(names)}" for task, names in chosen.items())
        + "."
    ]


def source_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "| sibling study | budget (s) | trials | best validation accuracy | its plan was |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, s in sorted(results["sources"].items()):
        value = "-" if s["best_value"] is None else f"{s['best_value']:.3f}"
        lines.append(
            f"| {key.replace('|', ' seed ')} | {s['budget']:.1f} | {s['trials']} | {value} | "
            f"{s['winner']} |"
        )
    return lines


def section(results: dict[str, Any], t: Any, figure: Path) -> str:
    from benchmarks._report import DOC

    return "\n\n".join(
        [
            settings_text(results, t),
            "\n".join(verdict_lines(t)),
            f"Test accuracy at T (task's sibling in brackets; noise: {base(t)}'s 95 % half-width):",
            "\n".join(at_t_lines(t)),
            "Anytime: mean over tasks of the test accuracy of each method's choice at a "
            "fraction of T (`-`: some task had no finished trial yet). One panel per task and "
            f"the mean over tasks: ![anytime curves]({figure.relative_to(DOC.parent)})",
            "\n".join(anytime_lines(t)),
            "Paired, per run (task and seed): the runs where a method's choice tested higher / "
            "lower / equal to cold's at the same fraction of T (runs where both had a choice):",
            "\n".join(paired_lines(t)),
            "Wall time, trials and where the chosen plan came from (first plans: warm, "
            "portfolio, recipe and probe plans queued; a chosen plan named by its kind when it "
            "was a first plan, else searched):",
            "\n".join(run_lines(t)),
            *load_lines(results, t),
            "\n".join(queue_lines(results, t)),
            "The sibling studies (the last column: the kind or source of their chosen plan):",
            "\n".join(source_lines(results)),
            *(["\n".join(portfolio_lines(t))] if portfolio_lines(t) else []),
        ]
    )


def report(path: Path, title: str = TITLE) -> None:
    """Write the section ``title`` of docs/benchmarks.md from the results file ``path`` (its
    figure: docs/figures/<the file's stem>_anytime.png)."""
    from benchmarks._quality_report import Table, draw
    from benchmarks._report import DOC, write_section

    results = json.loads(path.read_text())
    t = Table(results, ORDER)
    if not t.tasks or base(t) not in t.methods:
        raise SystemExit(
            f"{path}: no task with every method run for one seed, or neither cold nor mixed "
            "among them; run it first"
        )
    figure = DOC.parent / "figures" / f"{path.stem}_anytime.png"
    draw(t, figure, ORDER)
    body = section(results, t, figure)
    if path.resolve() != RESULTS.resolve():
        where = path.resolve().relative_to(ROOT)
        body = body.replace(
            f"`{COMMAND} --report`",
            f"`{COMMAND} --report --results {where} --section '{title}'`",
        ).replace("` (resumable)", f" --results {where}` (resumable)")
    write_section(title, body)
    print(body)
    print(f"wrote {DOC} and {figure}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated")
    parser.add_argument("--seeds", default=[0, 1], type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="budget = scale x T (10 s at least; smoke runs)"
    )
    parser.add_argument("--sources", default="/tmp/warm_sources", help="the sibling studies")
    parser.add_argument("--portfolio", type=Path, default=PORTFOLIO)
    parser.add_argument(
        "--portfolio-on",
        choices=("val", "test"),
        default="test",
        help="the leave-one-task-out portfolio chosen on the other tasks' val or test accuracy "
        "(benchmarks/portfolio.py; its shipped rule is test)",
    )
    parser.add_argument(
        "--portfolio-without",
        choices=("task", "sibling"),
        default="sibling",
        help="each task's portfolio chosen without the task only, or without its sibling as well "
        "(a user's earlier study is not in the shipped portfolio; runs before 2026-12-06: task)",
    )
    parser.add_argument(
        "--earlier",
        choices=("sibling", "version"),
        default="sibling",
        help="the study a warm start reads: the sibling task's on the same seed, or the same "
        "task's on the other seed (a new version of its dataset; takes --seeds a,b)",
    )
    parser.add_argument("--again", default="", help="methods to run again (comma-separated)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--vanilla-from",
        type=Path,
        default=SOURCE,
        help="the search-quality results whose vanilla loop gives each T (e.g. "
        "benchmarks/results/search_quality_side.json, measured side by side)",
    )
    parser.add_argument("--report", action="store_true", help="write the section only")
    parser.add_argument("--section", default=TITLE, help="the section of docs/benchmarks.md")
    args = parser.parse_args()
    if args.report:
        return report(args.results, args.section)
    return run(args)


if __name__ == "__main__":
    main()
