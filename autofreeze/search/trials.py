"""The worker loop: take trials from the shared study until its global budget is spent.

Each trial is asked and told through Optuna's public ask-and-tell interface, with the trial
taken from the queue in autofreeze's order (:class:`autofreeze.study.queue.StudyOnStorage`):
retries and re-evaluations first. While a trial runs, this process beats its heartbeat (the
storage's public ``record_heartbeat``: in the database, or through a gRPC storage proxy,
:mod:`autofreeze.study.proxy`), so that another worker retries it if this one dies.
What the observers show is told around the trial, never from inside the objective
(:mod:`autofreeze.search.observer`).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.config import StudyConfig
from autofreeze.plan import FreezePlan
from autofreeze.progress import Progress, detail, output_lost
from autofreeze.search.objective import Objective, OverBudget, TrialFailed
from autofreeze.search.observer import Observers, Run
from autofreeze.search.signals import Interrupts
from autofreeze.study import (
    budget,
    make_pruner,
    make_sampler,
    records,
    requeue_interrupted,
    run_stream,
)
from autofreeze.study.allowance import allowance, search_spent
from autofreeze.study.proxy import ProxyStorage
from autofreeze.study.queue import StudyOnStorage

CAUGHT = (TrialFailed, OverBudget)  # a trial that fails with a reason; the search goes on


@contextmanager
def heartbeat(on: StudyOnStorage, trial: optuna.Trial) -> Iterator[None]:
    """Beat the trial's heartbeat every ``heartbeat_interval`` seconds while it runs (what
    ``Study.optimize`` does); nothing when the storage has no heartbeat (the public
    ``get_heartbeat_interval`` and ``record_heartbeat`` of ``RDBStorage`` and of
    :class:`~autofreeze.study.proxy.ProxyStorage`)."""
    has_beats = isinstance(on.storage, (optuna.storages.RDBStorage, ProxyStorage))
    beats = on.storage if has_beats else None
    interval = beats.get_heartbeat_interval() if beats is not None else None
    if beats is None or interval is None:
        yield
        return
    trial_id = on.trial_id(trial.number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            beats.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="autofreeze-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(on: StudyOnStorage) -> None:
    """Mark the trials of dead workers FAIL; the retry callback re-queues them (Optuna's
    ``fail_stale_trials`` for a database; the proxy's own, which Optuna's skips)."""
    if isinstance(on.storage, ProxyStorage):
        on.storage.fail_stale_trials(on.study)
        return
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9, as Optuna itself does
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(on.study)


def run_one(
    run: Run,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], Any],
    observers: Observers,
) -> FrozenTrial:
    """Run ``trial``, tell the study, tell the observers; return the finished trial.

    A trial that fails with a reason (:data:`CAUGHT`) is told FAIL and the loop goes on;
    anything else (Ctrl-C, a bug) is told FAIL and raised, as ``Study.optimize`` does.
    """
    study = run.study
    state, value, error = TrialState.COMPLETE, None, None
    with heartbeat(run.on, trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except (Exception, KeyboardInterrupt) as exc:
            state, error = TrialState.FAIL, exc
        if state != TrialState.FAIL or isinstance(error, TrialFailed):  # it ran: show it
            values = None if value is None else list(value) if isinstance(value, tuple) else [value]
            observers.trial_ran(run, trial, state, values)  # RUNNING: its figure attaches to it
    if state == TrialState.COMPLETE:
        told = study.tell(trial, value)
    else:
        told = study.tell(trial, state=state)
    observers.trial_told(run, told)
    if error is not None and not isinstance(error, CAUGHT):
        raise error
    return told


def rerun_plan(
    study: optuna.Study, objective: Objective, progress: Progress
) -> Callable[[FrozenTrial, int], float | None]:
    """What the re-evaluation calls to train trial's plan again with another seed: the same
    objective on a ``FixedTrial`` (no new trial in the study), recorded on the study."""

    def run_plan(trial: FrozenTrial, seed: int) -> float | None:
        # the whole plan as parameters: a trial of the narrow space lacks the others' names
        params = FreezePlan.from_dict(records.plan(trial)).to_params()
        fixed = optuna.trial.FixedTrial(params, number=trial.number)
        for key, value in records.reevaluation_attrs(trial.number, seed).items():
            fixed.set_user_attr(key, value)
        t0 = time.perf_counter()
        try:
            value: float | None = float(objective(fixed))  # type: ignore[arg-type]
        except TrialFailed as exc:
            value = None
            progress(f"re-run of trial {trial.number} (seed {seed}) failed: {exc}")
        seconds = records.seconds(fixed, time.perf_counter() - t0)  # type: ignore[arg-type]
        records.add_rerun(study, trial.number, seed, value, float(seconds or 0.0))
        if value is not None:
            progress(f"re-run of trial {trial.number} (seed {seed}): {value:.4f} in {seconds:.1f}s")
        return value

    return run_plan


def search_done(study: optuna.Study, cfg: StudyConfig) -> bool:
    """Whether the search's share of the budget is spent (the re-evaluation may start)."""
    a = allowance(cfg)
    trials = study.get_trials(deepcopy=False)
    done, running = records.budget(trials)
    if running:
        return False
    if a.trials is not None and done >= a.trials:
        return True
    return search_spent(a, study, trials)


def run_trials(
    run: Run,
    objective: Objective,
    observers: Observers,
    progress: Progress,
    worker: str = "main",
    poll: float = 2.0,
) -> int:
    """Take trials until the study's global budget is spent; return how many this process ran.

    A trial starts only while ``counted + running`` is below the search's share of
    ``n_trials`` and the search's share of a time budget is not spent
    (:mod:`autofreeze.study.allowance`), so the budget holds however many workers share the
    study. When the rest of the budget is running elsewhere the worker
    waits: if one of those trials dies (its heartbeat goes stale) it is retried here.
    ``worker`` names this process in the sampler's seed (see ``study.run_stream``).
    """
    study, cfg = run.study, run.cfg
    a, timeout = allowance(cfg), cfg.study.timeout
    n_trials = a.trials
    # a sampler seeded for this worker and this run: no two of them propose the same trials
    trials = study.get_trials(deepcopy=False)
    design = records.initial_design(trials)
    study.sampler = make_sampler(cfg, run_stream(study, worker), design)
    study.pruner = make_pruner(cfg, design)  # judging from when the sampler starts learning
    t0 = time.perf_counter()
    ran = 0
    with Interrupts() as interrupts:  # SIGINT or SIGTERM: the trial re-queued, then raised
        while True:
            interrupts.check()
            done, running = budget(study)
            if n_trials is not None and done >= n_trials:
                break
            if timeout is not None and time.perf_counter() - t0 >= timeout:
                progress(f"timeout of {timeout:.0f}s reached")
                break
            fail_stale(run.on)
            if search_spent(a, study, study.get_trials(deepcopy=False)):
                if not running:
                    break
                time.sleep(poll)  # a running trial may still fail and hand time back
                continue
            if n_trials is not None and done + running >= n_trials:
                time.sleep(poll)
                continue
            trial = run.on.ask()
            try:
                finished = run_one(run, trial, interrupts.cutting(objective), observers)
            except KeyboardInterrupt:  # the CLI says once how to resume: this is a detail
                requeue_interrupted(study, trial.number, lambda line: detail(progress, line))
                raise
            if records.over_budget(finished):
                continue  # another worker took the last of the budget first: nothing ran
            ran += 1
            if output_lost():  # nobody is watching: the trial is recorded, take no new one
                break
    return ran
