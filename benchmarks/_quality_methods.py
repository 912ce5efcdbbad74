"""The five search methods of benchmarks/search_quality.py, each timed from its start and
recording, after every finished trial, the plan it would hand over if stopped then.

The four loops a user writes by hand (vanilla, random, tpe_hyperband, top_after_one_epoch) are
plain Optuna studies in memory around autofreeze's objective over the vanilla space: TPE or
random over the boundary, the head LR and the backbone LR ratio, static schedule, no feature
cache, validation after every epoch (the loop of Optuna's PyTorch example). Training is
therefore identical across methods; only how trials are chosen and stopped differs.
autofreeze runs its own search (``run_search``) with its default study config and a wall-time
budget.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks._quality_tasks import Task

METHODS = ("vanilla", "random", "tpe_hyperband", "top_after_one_epoch", "autofreeze")
TOP_SHARE = 0.2  # top_after_one_epoch: the share of the one-epoch configurations trained fully
FIRST_ROUND_PROBES = 3  # one-epoch trainings timed before the first round is sized
LOOSE_TRIALS = 1000  # a trial count that never binds a loop stopped by time


@dataclass
class Event:
    """A finished trial: when (seconds since the method started), and the plan the method
    would choose if stopped then (None: none yet). ``final`` marks autofreeze's own choice at
    the end of its search."""

    seconds: float
    trial: int
    state: str
    value: float | None
    choice: dict[str, Any] | None
    final: bool = False


@dataclass
class MethodRun:
    """One method's search of one task and seed."""

    method: str
    seconds: float = 0.0  # wall time from its start to its end
    events: list[Event] = field(default_factory=list)
    curves: list[list[float]] = field(default_factory=list)  # full-length trials' val curves
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Setup:
    """What every method of one task and seed shares."""

    name: str  # task name
    task: Task
    seed: int
    epochs: int
    weights: str
    folder: Path  # a fresh folder per method run: no method inherits another's caches


# -- configs -------------------------------------------------------------------------------------
USER_SEARCH = (
    'schedules = "static"\nlayer_decay = 1.0\nweight_decay = 0.05\ninit = "pretrained"\n'
    'bn_mode = "eval"\nfit_to_budget = false'
)


def study_toml(
    setup: Setup, study: dict[str, Any], user: bool, search: dict[str, Any] | None = None
) -> str:
    """A study config for ``setup``; ``user``: the vanilla space, no cache, every epoch
    validated; else autofreeze's defaults. ``study``: extra ``[study]`` keys; ``search``:
    extra ``[search]`` keys (e.g. ``warm_start``)."""
    options = setup.task.options(setup.seed)
    dataset = "\n".join(f"{k} = {_toml(v)}" for k, v in options.items())
    extra = "\n".join(f"{k} = {_toml(v)}" for k, v in study.items())
    searched = "\n".join(f"{k} = {_toml(v)}" for k, v in (search or {}).items())
    training = 'feature_cache = false\nvalidate = "every_epoch"' if user else ""
    return f"""
[study]
name = "{setup.name}_{setup.seed}"
seed = {setup.seed}
dashboard = false
{extra}

[backbone]
name = "resnet10t"
weights = "{setup.weights}"

[dataset]
{dataset}

[training]
epochs = {setup.epochs}
batch_size = 25
image_size = {setup.task.image_size}
seed = {setup.seed}
{training}

[search]
{USER_SEARCH if user else ""}
{searched}
"""


def _toml(value: Any) -> str:
    """A TOML value: inline tables and arrays element by element, others as Python writes
    them with double quotes."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value).replace("'", '"')


# keys today's product may not know yet: (the key as it appears in a ConfigError, its line,
# what replaces it, why); see load_study
FALLBACKS = (
    ("study.budget", "budget = ", "timeout = ", "[study] budget refused: timeout = T instead"),
    ("training.validate", 'validate = "every_epoch"', "", "[training] validate refused: left out"),
)


def load_study(
    setup: Setup,
    study: dict[str, Any],
    user: bool,
    said: set[str],
    search: dict[str, Any] | None = None,
) -> Any:
    """The config, written into the run's folder; a key today's product rejects as unknown is
    replaced as :data:`FALLBACKS` says (said once per process on stderr). ``search``: extra
    ``[search]`` keys."""
    from autofreeze.config import load_config
    from autofreeze.errors import ConfigError

    setup.folder.mkdir(parents=True, exist_ok=True)
    path = setup.folder / "study.toml"
    text = study_toml(setup, study, user, search)
    for _ in range(len(FALLBACKS) + 1):
        path.write_text(text)
        try:
            return load_config(path)
        except ConfigError as exc:
            hit = next((f for f in FALLBACKS if f"{f[0]}:" in str(exc) and f[1] in text), None)
            if hit is None:
                raise
            text = text.replace(hit[1], hit[2])
            if hit[3] not in said:
                said.add(hit[3])
                print(f"warning: {hit[3]} ({exc})", file=sys.stderr)
    return load_config(path)


# -- the loops a user writes ---------------------------------------------------------------------
class FirstEpochOnly(optuna.pruners.BasePruner):
    """Stops every trial after its first epoch (the first round of top_after_one_epoch)."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return True


def best_complete(trials: list[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(done, key=lambda t: t.value) if done else None  # ties: the first


class Loop:
    """One hand-written Optuna loop around autofreeze's objective, on one clock."""

    def __init__(self, cfg: Any, run: MethodRun, t0: float) -> None:
        from autofreeze.progress import quiet
        from autofreeze.runs.prepare import prepare
        from autofreeze.search.objective import Objective
        from autofreeze.search.run import search_space

        self.cfg, self.run, self.t0 = cfg, run, t0
        prepared = prepare(cfg, progress=quiet)
        self.objective = Objective(prepared, search_space(prepared))
        self.full: list[FrozenTrial] = []  # trials trained for every epoch, in any study

    def study(self, sampler: Any, pruner: Any = None) -> optuna.Study:
        return optuna.create_study(
            direction="maximize", sampler=sampler, pruner=pruner or optuna.pruners.NopPruner()
        )

    def left(self, budget: float) -> float:
        return budget - (time.perf_counter() - self.t0)

    def optimize(self, study: optuna.Study, **limits: Any) -> None:
        from autofreeze.search.objective import OverBudget, TrialFailed

        if limits.get("timeout", 1) <= 0:
            return
        study.optimize(
            self.objective, catch=(TrialFailed, OverBudget), callbacks=[self.told], **limits
        )

    def told(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's callback after each trial: the method's choice now."""
        from autofreeze.study import records

        epochs = self.cfg.training.epochs
        if trial.state == TrialState.COMPLETE and len(trial.intermediate_values) == epochs:
            self.full.append(trial)
            self.run.curves.append([trial.intermediate_values[e] for e in range(1, epochs + 1)])
        best = best_complete(self.full)
        self.run.events.append(
            Event(
                time.perf_counter() - self.t0,
                trial.number,
                trial.state.name,
                trial.value,
                None if best is None else records.plan(best),
            )
        )


def vanilla(loop: Loop, setup: Setup, trials: int) -> None:
    """Optuna's defaults (TPESampler, seeded), a fixed number of trials, no pruning."""
    study = loop.study(optuna.samplers.TPESampler(seed=setup.seed))
    loop.optimize(study, n_trials=trials)


def random_search(loop: Loop, setup: Setup, budget: float) -> None:
    study = loop.study(optuna.samplers.RandomSampler(seed=setup.seed))
    loop.optimize(study, timeout=loop.left(budget))


def tpe_hyperband(loop: Loop, setup: Setup, budget: float) -> None:
    """TPE with Optuna's Hyperband, epochs as the resource (1 to all, reduction factor 3)."""
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=setup.epochs, reduction_factor=3
    )
    study = loop.study(optuna.samplers.TPESampler(seed=setup.seed), pruner)
    loop.optimize(study, timeout=loop.left(budget))


def top_after_one_epoch(loop: Loop, setup: Setup, budget: float) -> None:
    """Egele et al. (2023): random configurations trained one epoch each, the top
    :data:`TOP_SHARE` of them (then the next in rank, while time is left) trained fully.

    The first round is sized from the first one-epoch trainings: ``n`` such that ``n`` epochs
    plus ``TOP_SHARE * n`` full trainings (``epochs`` times one) fit in the time left.
    """
    first = loop.study(optuna.samplers.RandomSampler(seed=setup.seed), FirstEpochOnly())
    loop.optimize(first, n_trials=FIRST_ROUND_PROBES, timeout=loop.left(budget))
    probes = [t for t in first.trials if t.duration is not None]
    if not probes:
        return
    epoch = sum(t.duration.total_seconds() for t in probes) / len(probes)
    # n one-epoch trainings and TOP_SHARE * n full ones (epochs x one each) in what is left
    # plus what the probes took
    room = (loop.left(budget) + len(probes) * epoch) / (epoch * (1 + TOP_SHARE * setup.epochs))
    n = max(len(probes), int(room))
    loop.optimize(first, n_trials=n - len(probes), timeout=loop.left(budget))
    ranked = sorted(
        (t for t in first.trials if 1 in t.intermediate_values),
        key=lambda t: -t.intermediate_values[1],
    )
    top = max(1, math.ceil(TOP_SHARE * len(ranked)))
    loop.run.info.update(first_round=len(ranked), top=top)
    second = loop.study(optuna.samplers.RandomSampler(seed=setup.seed))
    for t in ranked:  # in rank order; each training starts only while time is left
        second.enqueue_trial(t.params)
    loop.optimize(second, n_trials=len(ranked), timeout=loop.left(budget))
    loop.run.info["trained_fully"] = sum(t.state == TrialState.COMPLETE for t in second.trials)


def run_user_loop(setup: Setup, method: str, limit: float, said: set[str]) -> MethodRun:
    """``limit``: the vanilla loop's trial count, or the wall time T of the others."""
    run = MethodRun(method)
    cfg = load_study(setup, {"n_trials": LOOSE_TRIALS}, user=True, said=said)
    t0 = time.perf_counter()
    loop = Loop(cfg, run, t0)
    if method == "vanilla":
        vanilla(loop, setup, int(limit))
    else:
        {
            "random": random_search,
            "tpe_hyperband": tpe_hyperband,
            "top_after_one_epoch": top_after_one_epoch,
        }[method](loop, setup, limit)
    run.seconds = time.perf_counter() - t0
    run.info["trials"] = len(run.events)
    run.info["full_trials"] = len(loop.full)
    return run


# -- autofreeze ----------------------------------------------------------------------------------
class Recorder:
    """A search observer: after each told trial, the best counted trial so far (by its
    validation value; re-evaluations and first-plan retries are not search results)."""

    def __init__(self, run: MethodRun, t0: float) -> None:
        self.run, self.t0 = run, t0
        self.best: FrozenTrial | None = None

    def started(self, run: Any) -> None:
        self.run.info["started_seconds"] = time.perf_counter() - self.t0  # prepare, probe

    def trial_ran(self, run: Any, trial: Any, state: Any, values: Any) -> None:
        pass

    def trial_told(self, run: Any, trial: FrozenTrial) -> None:
        from autofreeze.study import records

        value = trial.values[0] if trial.values else None
        counted = records.counts(trial) and trial.state == TrialState.COMPLETE
        better = self.best is None or (value or -math.inf) > self.best.values[0]
        if counted and value is not None and math.isfinite(value) and better:
            self.best = trial
        self.run.events.append(
            Event(
                time.perf_counter() - self.t0,
                trial.number,
                trial.state.name,
                value,
                None if self.best is None else records.plan(self.best),
            )
        )

    def ended(self, run: Any) -> None:
        pass


def run_autofreeze(
    setup: Setup,
    budget: float,
    said: set[str],
    study: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    method: str = "autofreeze",
) -> MethodRun:
    """autofreeze's default study with a wall-time budget of ``budget`` seconds; ``study`` and
    ``search``: extra ``[study]`` and ``[search]`` keys (benchmarks/warm_start.py), the run
    named ``method``."""
    from autofreeze.progress import quiet
    from autofreeze.search.run import run_search
    from autofreeze.study import best_trial, records

    run = MethodRun(method)
    limits = {"n_trials": 200, "budget": round(budget, 1), **(study or {})}
    cfg = load_study(setup, limits, user=False, said=said, search=search)
    run.info["limit"] = "budget" if cfg.study.model_dump().get("budget") else "timeout"
    t0 = time.perf_counter()
    recorder = Recorder(run, t0)
    study = run_search(cfg, progress=quiet, observers=[recorder]).study
    best = best_trial(study)
    run.seconds = time.perf_counter() - t0
    run.events.append(
        Event(
            run.seconds,
            -1 if best is None else best.number,
            "FINAL",
            None if best is None else best.values[0],
            None if best is None else records.plan(best),
            final=True,
        )
    )
    trials = study.get_trials(deepcopy=False)
    run.info.update(
        trials=sum(records.counts(t) for t in trials),
        full_trials=sum(records.counts(t) and t.state == TrialState.COMPLETE for t in trials),
        reevaluations=len(records.reruns(study)),  # re-runs are recorded on the study
        reevaluated=records.choice(study) is not None,
        winner=None if best is None else records.name(best),
        boundary=None if best is None else records.plan(best).get("boundary"),
        probe_boundary=(records.probe(study) or {}).get("boundary"),
    )
    return run
