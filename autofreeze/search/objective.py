"""The Optuna objective: suggest a plan, build it, train it, report every epoch, prune."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from autofreeze.cache.activations import (
    FeatureCache,
    PrefixCache,
    PrefixFeatures,
    Views,
    cacheable,
    prefix_cacheable,
    prefix_features,
    refreezer,
)
from autofreeze.cache.store import CACHE_FOLDER
from autofreeze.config import COSTS
from autofreeze.core.backbones import Backbone
from autofreeze.core.split import SplitError
from autofreeze.core.train import EpochResult, TrainingDiverged, fit
from autofreeze.plan import FreezePlan
from autofreeze.progress import Progress, detail, quiet
from autofreeze.runs.prepare import Prepared
from autofreeze.search.space import SearchSpace
from autofreeze.study import records
from autofreeze.study.allowance import allowance
from autofreeze.study.retries import requeue_over_budget
from autofreeze.study.sampling import validation_epochs
from autofreeze.study.storage import storage_lost

# a running trial's history (the machine record) is written at its first epoch, then after an
# epoch that ends this many seconds after the last write, and in full at its end: a GPU epoch
# takes longer, and every epoch is written as before; epochs of a second (the load harness's
# sleeping trials) no longer cost a storage call each. Reports (trial.report, what
# optuna-dashboard plots live and the pruner reads) still come every validated epoch.
HISTORY_EVERY = 10.0


class TrialFailed(RuntimeError):
    """A trial that cannot finish (diverged, out of memory); the study goes on."""


class OverBudget(RuntimeError):
    """The trial started after other workers took the last of the budget: it does not run."""


class Objective:
    """Callable objective for ``study.optimize``; one instance per worker process."""

    # the study's trials as a trial's start read them (trial number, trials): see _trials
    _read: tuple[int, list[FrozenTrial]] | None = None

    def __init__(self, prepared: Prepared, space: SearchSpace, progress: Progress = quiet) -> None:
        self.prepared = prepared
        self.space = space
        self.progress = progress
        self.features = FeatureCache()
        t = prepared.cfg.training
        self.prefixes = PrefixCache(
            prepared.cfg.base_dir / CACHE_FOLDER,
            disk_bytes=None if t.cache_size is None else t.cache_size * 2**20,
        )
        self._said: set[str] = set()
        self.current_trial: int | None = None
        self.training = False  # True while a trial's own code runs (Ctrl-C may cut it)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.current_trial = trial.number
        self._read = None
        self._check_budget(trial)
        self.training = True
        t0 = time.perf_counter()  # the trial's wall time: building, caching and training
        try:
            return self._run(trial)
        finally:
            records.write_seconds(trial, time.perf_counter() - t0)
            self.training = False

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        prepared, cfg = self.prepared, self.prepared.cfg
        plan = self.space.suggest(trial, wide=self._wide(trial))
        seed = records.seed(trial, cfg.training.seed)  # other for re-evaluations
        settings = cfg.training.model_copy(update={"seed": seed})
        backbone = prepared.backbone(plan, seed=seed)
        records.write_plan(trial, plan, backbone)
        schedule = prepared.schedule(plan)
        baseline = records.baseline(trial)
        # baselines and re-evaluations always run to the end; Optuna prunes one objective only
        multi = bool(cfg.study.objectives)
        prunable = baseline is None and records.reevaluation_of(trial) is None and not multi
        metric = cfg.study.metric

        seen: list[EpochResult] = []
        report = self._reporter(trial, plan, backbone, seen, prunable)
        features, prefix, online, views = self._cached_inputs(trial, backbone, plan, seed)
        try:
            result = fit(
                backbone,
                plan,
                schedule,
                prepared.train,
                prepared.val,
                settings,
                report,
                # a re-evaluation's value is read at its end; the others' where the pruner reads
                validate_at=validation_epochs(cfg, compared=records.reevaluation_of(trial) is None),
                features=features,
                prefix=None if prefix is None else (prefix.split, prefix.train, prefix.val),
                refreeze=None
                if features is not None or online
                else self._refreeze(backbone, plan, views),
            )
        except BaseException as exc:  # pruned, diverged, out of memory, cut short
            if not storage_lost(exc):  # its epochs so far (the reporter skips some)
                records.write_history(trial, seen)
            if isinstance(exc, TrainingDiverged):
                raise self._fail(trial, f"diverged: {exc}") from None
            if isinstance(exc, torch.OutOfMemoryError):
                raise self._fail(trial, "out of memory") from None
            raise
        records.write_result(trial, result)
        value = getattr(result.final, metric)
        if not math.isfinite(value):
            raise self._fail(trial, f"{metric} is {value}")
        if multi:  # the metric, then each cost (the Pareto front trades them)
            return (value, *(float(result.cost[COSTS[c]]) for c in cfg.study.objectives[1:]))
        return value

    def _reporter(
        self,
        trial: optuna.Trial,
        plan: FreezePlan,
        backbone: Backbone,
        seen: list[EpochResult],
        prunable: bool,
    ) -> Callable[[EpochResult], None]:
        """What the trainer calls after every epoch: record the history so far, and at a
        validated epoch report the metric on the common axis (the epoch) and prune where the
        pruner says so; say the epoch's line."""
        cfg = self.prepared.cfg
        metric, epochs, multi = cfg.study.metric, cfg.training.epochs, bool(cfg.study.objectives)
        label = f"#{trial.number} {records.name(trial)}"
        written = -math.inf  # when the history was last written

        def report(r: EpochResult) -> None:
            nonlocal written
            value = getattr(r, metric)
            seen.append(r)
            # how far a running trial is, where reports come only when validated: the first
            # epoch, then every epoch that ends HISTORY_EVERY seconds after the last written
            # (its end writes them all: write_result, or _run when it stops before)
            now = time.monotonic()
            if len(seen) == 1 or now - written >= HISTORY_EVERY:
                records.write_history(trial, seen)
                written = now
            if value is not None and not multi:  # none in a multi-objective study (Optuna's)
                trial.report(value, step=r.epoch)  # the common axis is the epoch
            if r.event:
                detail(self.progress, f"  {label} {r.event}")
            said = "(not validated)" if value is None else f"{metric}={value:.4f}"
            detail(self.progress, f"  {label} epoch {r.epoch}/{epochs} [{r.phase}] {said}")
            if value is None:
                return  # nothing measured: nothing to judge
            # a head-only warm-up (gradual, lp_ft) is not judged before its backbone trains
            warm_up = r.first_trainable == backbone.n_blocks > plan.boundary
            # a trial at its last epoch has finished: the pruner is not asked, it completes
            if prunable and not warm_up and r.epoch < epochs and trial.should_prune():
                trial.set_user_attr(records.PRUNED_AT_EPOCH, r.epoch)
                # no FitResult to record: the validation time so far, as a complete trial's
                val_seconds = sum(e.val_seconds for e in seen)
                trial.set_user_attr(records.VALIDATION_SECONDS, round(val_seconds, 3))
                raise optuna.TrialPruned(f"pruned at epoch {r.epoch} ({metric}={value:.4f})")

        return report

    def _cached_inputs(
        self, trial: optuna.Trial, backbone: Backbone, plan: FreezePlan, seed: int
    ) -> tuple[Any, PrefixFeatures | None, bool, Views]:
        """The frozen work this trial reuses: pooled features (every block frozen), or the
        prefix's outputs at its boundary, or neither (recorded on the trial either way); and
        whether augmentation runs online (then nothing is cached) with its cached views."""
        prepared, t = self.prepared, self.prepared.cfg.training
        features, prefix = None, None
        policy = plan.augment or t.augment
        # augmented views cached per image (the same for every trial: the config's seed)
        views = Views(t.cached_views, t.seed, policy) if policy != "none" else Views()
        mixing = t.mixup > 0 or t.cutmix > 0
        online = (policy != "none" and not views.n) or mixing  # fresh every batch: no cache
        records.write_augment(trial, policy, views.n, mixing)
        if t.feature_cache and cacheable(backbone, plan, online):
            # every block frozen: the classifier trains on pooled features computed once
            train, val = prepared.train, prepared.val
            features = self.features.get(backbone, plan, (), train, val, views=views)
            records.write_cache(trial, "pooled", plan.boundary, "", views.n)
        elif t.feature_cache and prefix_cacheable(backbone, plan, online):
            prefix = self._prefix(trial, backbone, plan, seed, views)
            if prefix is not None:
                records.write_cache(trial, "prefix", plan.boundary, prefix.source, views.n)
        trial.set_user_attr(records.FEATURE_CACHE, features is not None or prefix is not None)
        return features, prefix, online, views

    def _prefix(
        self, trial: optuna.Trial, backbone: Backbone, plan: FreezePlan, seed: int, views: Views
    ) -> PrefixFeatures | None:
        """The plan's frozen prefix from the cache; a backbone that cannot be split at this
        boundary trains uncached (recorded on the trial, said once per reason and study)."""
        cfg = self.prepared.cfg
        try:
            return prefix_features(
                backbone,
                plan,
                self.prepared.train,
                self.prepared.val,
                self.prefixes,
                weights=cfg.weights_path(),
                seed=seed,
                device=cfg.training.device,
                dtype=cfg.training.cache_dtype,
                views=views,
            )
        except SplitError as exc:
            records.write_uncached(trial, plan.boundary, str(exc))
            note = f"note: {backbone.name} runs uncached at block {plan.boundary}: {exc}"
            if note not in self._said and records.say_once(getattr(trial, "study", None), note):
                self.progress(note)
            self._said.add(note)
            return None

    def _refreeze(self, backbone: Backbone, plan: FreezePlan, views: Views) -> Any:
        """Blocks a schedule freezes for good are cached from then on, where that is exact."""
        t = self.prepared.cfg.training
        if not t.feature_cache or plan.bn_mode != "eval":
            return None
        train, val = self.prepared.train, self.prepared.val
        return refreezer(backbone, train, val, t.device, t.cache_dtype, views)

    def _wide(self, trial: optuna.Trial) -> bool:
        """Whether ``trial`` is asked the whole space or its core (see
        ``SearchSpace.searches_wide``)."""
        study = getattr(trial, "study", None)
        if study is None:  # a FixedTrial (re-runs, ``train``): its parameters are a whole plan
            return True
        trials = self._trials(trial, study)
        this = next((t for t in trials if t.number == trial.number), None)
        queued = None if this is None else this.system_attrs.get("fixed_params")
        sampled = sum(  # the sampler's own, finished (no queued parameters)
            1
            for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and "fixed_params" not in t.system_attrs
        )
        return self.space.searches_wide(queued, sampled)

    def _check_budget(self, trial: optuna.Trial) -> None:
        """Refuse to run a trial that raced another worker for the last of the budget and lost
        (see :func:`records.claimed_ahead`); a queued plan goes back to the queue."""
        n_trials = allowance(self.prepared.cfg).trials
        study = getattr(trial, "study", None)  # a FixedTrial (``train``, tests) has no study
        if n_trials is None or study is None or records.reevaluation_of(trial) is not None:
            return
        trials = self._trials(trial, study)  # read now: the trial is running, its racers too
        if records.claimed_ahead(trials, trial.number) < n_trials:
            return
        trial.set_user_attr(records.OVER_BUDGET, True)
        requeue_over_budget(study, next(t for t in trials if t.number == trial.number))
        raise OverBudget(f"trial {trial.number}: the budget of {n_trials} was taken by others")

    def _trials(self, trial: optuna.Trial, study: optuna.Study) -> list[FrozenTrial]:
        """The study's trials, read once as ``trial`` starts: the budget check reads them (the
        trial is running by then) and the choice of its space reuses that read."""
        if self._read is None or self._read[0] != trial.number:
            self._read = (trial.number, study.get_trials(deepcopy=False))
        return self._read[1]

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str) -> TrialFailed:
        records.write_failure(trial, reason)
        return TrialFailed(reason)
