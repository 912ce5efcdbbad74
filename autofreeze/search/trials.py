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

import math
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
from autofreeze.study import make_pruner, make_sampler, records, requeue_interrupted, run_stream
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
    trial_id = records.trial_id(trial)  # noted by the queue: no lookup
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


def fail_stale(on: StudyOnStorage, trials: list[FrozenTrial] | None = None) -> bool:
    """Mark the trials of dead workers FAIL; the retry callback re-queues them (Optuna's
    ``fail_stale_trials`` for a database; the proxy's own, which Optuna's skips, judged from
    ``trials`` when the caller has just read them). Whether any trial was failed."""
    if isinstance(on.storage, ProxyStorage):
        return bool(on.storage.fail_stale_trials(on.study, trials, on.study_id))
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9, as Optuna itself does
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = on.storage.get_heartbeat_stale_trial_callback()  # retries.retry_callback's
        before = getattr(retry, "calls", 0)
        optuna.storages.fail_stale_trials(on.study)
        return getattr(retry, "calls", 0) != before  # it is called for each trial failed


class StaleWatch:
    """When a worker looks for the trials of dead workers (:func:`fail_stale`): through a
    proxy at every step (it judges from the step's read of the study, no call of its own); in
    a database, whose look is a query of its own, at most every half heartbeat interval. A
    trial is stale after three silent intervals: looking more often finds nothing sooner."""

    def __init__(self, on: StudyOnStorage) -> None:
        self.on = on
        interval = getattr(on.storage, "heartbeat_interval", None)
        free = isinstance(on.storage, ProxyStorage)
        self.every = 0.0 if free or not interval else 0.5 * interval
        self.next = -math.inf

    def look(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """The study's trials after failing the stale ones among them (read again if any was
        failed: its retry now waits); ``trials`` as they are when none was or it is not due."""
        now = time.monotonic()
        if now < self.next:
            return trials
        self.next = now + self.every
        if fail_stale(self.on, trials):
            return self.on.study.get_trials(deepcopy=False)
        return trials


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
    stale = StaleWatch(run.on)
    with Interrupts() as interrupts:  # SIGINT or SIGTERM: the trial re-queued, then raised
        while True:
            interrupts.check()
            # one read of the study a step: the budget, the stale trials and the queue see it
            trials = study.get_trials(deepcopy=False)
            done, _ = records.budget(trials)
            if n_trials is not None and done >= n_trials:
                break
            if timeout is not None and time.perf_counter() - t0 >= timeout:
                progress(f"timeout of {timeout:.0f}s reached")
                break
            trials = stale.look(trials)
            done, running = records.budget(trials)
            if search_spent(a, study, trials):
                if not running:
                    break
                time.sleep(poll)  # a running trial may still fail and hand time back
                continue
            if n_trials is not None and done + running >= n_trials:
                time.sleep(poll)
                continue
            trial = run.on.ask(trials)
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
