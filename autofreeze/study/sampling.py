"""The sampler and the pruner of a study: seeded per worker and run, TPE's start-up sized to the
plans the study starts with, the pruner's warm-up from ``[study] prune_after``, and the epochs
whose validation the pruner reads."""

from __future__ import annotations

import hashlib
import math
import os
import socket
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autofreeze.config import StudyConfig
from autofreeze.study import records

STARTUP_TRIALS = 5  # TPE's random start-up when a study has no enqueued plans


EXPLORE_TRIALS = 3  # random trials after the enqueued ones, where the recipes never go
PRUNER_STARTUP = 3  # completed trials before a pruner judges, with no enqueued plans
REDUCTION_FACTOR = 3  # Hyperband's (Optuna's default): its rungs are W * 3**k


def sampler_seed(study_seed: int, stream: str) -> int:
    """A seed of its own for one stream of trials (a worker's run), derived from the study's."""
    digest = hashlib.sha256(f"{study_seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def worker_label() -> str:
    """A worker started by ``autofreeze search`` has a label (``cpu0``, ``gpu1``); one started
    by hand is named by its host and process."""
    return os.environ.get("AUTOFREEZE_WORKER") or f"{socket.gethostname()}:{os.getpid()}"


def run_stream(study: optuna.Study, worker: str) -> str:
    """What sets this run of this worker apart from every other one on the study: the worker
    and the number of trials the study already holds.

    Two workers started together differ by name; a resumed run differs by its trial count; a
    search on a fresh study in one process gets the same stream every time (reproducible).
    """
    return f"{worker}:{len(study.get_trials(deepcopy=False))}"


def make_sampler(
    cfg: StudyConfig, stream: str = "", initial_design: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded for ``stream`` (see :func:`run_stream`): workers and
    resumed runs sharing one seed would propose the same trials.

    ``initial_design`` is how many enqueued plans (baselines, the probe's prior) the study
    starts with. They make most of TPE's start-up, with ``EXPLORE_TRIALS`` random trials after
    them (5 random trials without any). The recipes cluster at moderate LRs; with no random
    trial TPE exploited the first searched plan that beat them for the rest of the quickstart
    (best 0.887), with 3 it found 0.933. With 6 + 5 random, as before, most random trials were
    spent on LRs too small to train (now cut by the budget's head-LR floor).

    Every TPE setting autofreeze relies on is given here rather than left to Optuna's
    defaults, which changed between releases (multivariate, constant_liar).
    """
    seed = sampler_seed(cfg.study.seed, stream) if stream else cfg.study.seed
    name = cfg.study.sampler
    if name == "tpe":
        startup = max(STARTUP_TRIALS, initial_design + EXPLORE_TRIALS)
        with warnings.catch_warnings():  # multivariate/group are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,
                n_startup_trials=startup,
                constant_liar=True,
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GPSampler(seed=seed)


def warmup_steps(fraction: float, epochs: int) -> int:
    """The first epoch a pruner may stop a trial at: ``fraction`` of the epochs, never the
    first epoch (steps are 1-based epochs)."""
    return max(2, math.ceil(fraction * epochs))


def trains_backbone(trial: FrozenTrial) -> bool:
    """Whether a trial's plan trains any block (not the head alone); a trial without a plan
    yet counts as one that does."""
    plan, n = records.plan(trial), records.n_blocks(trial)
    return n is None or plan.get("boundary", 0) < n


class _Peers:
    """A study as a pruner sees it, holding only the trials of one kind."""

    def __init__(self, study: optuna.Study, backbone: bool) -> None:
        self._study, self._backbone = study, backbone

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return self._study.direction

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if trains_backbone(t) == self._backbone]


class LikeWithLike(optuna.pruners.BasePruner):
    """Optuna's percentile or median pruner, judging a trial against the completed trials of
    its own kind: a plan that trains backbone blocks against others that do, a head-only plan
    against head-only ones.

    A head on frozen (cached) features reaches its plateau in a few epochs; fine-tuning curves
    rise later and cross it. Judged against both, fine-tuning plans were pruned at the
    pruner's epoch by the head-only plateau (docs/benchmarks.md, "Search quality").
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.inner.prune(_Peers(study, trains_backbone(trial)), trial)  # type: ignore[arg-type]


def make_pruner(cfg: StudyConfig, initial_design: int = 0) -> optuna.pruners.BasePruner:
    """The configured pruner, judging trials no earlier than ``[study] prune_after``.

    Early epochs rank fine-tuning plans poorly (a high LR under a cosine schedule starts badly
    and ends well); docs/benchmarks.md measures it and derives the defaults.

    The percentile and median pruners judge a trial against the completed trials at the same
    epoch, and start once ``initial_design`` (the enqueued plans) and ``EXPLORE_TRIALS`` more
    have completed, as TPE starts: judged against the recipes alone (four of them in a small
    budget), the top quarter was the best recipe's curve, and nearly every searched trial was
    pruned (docs/benchmarks.md, "Search quality").
    """
    study, epochs = cfg.study, cfg.training.epochs
    warm = warmup_steps(study.prune_after, epochs)
    startup = max(PRUNER_STARTUP, initial_design + EXPLORE_TRIALS)
    if study.pruner == "median":
        return LikeWithLike(
            optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warm)
        )
    if study.pruner == "percentile":
        return LikeWithLike(
            optuna.pruners.PercentilePruner(
                study.prune_percentile, n_startup_trials=startup, n_warmup_steps=warm
            )
        )
    if study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=warm, max_resource=max(warm, epochs), reduction_factor=REDUCTION_FACTOR
        )
    return optuna.pruners.NopPruner()


def validation_epochs(cfg: StudyConfig, *, compared: bool = True) -> set[int] | None:
    """The 1-based epochs whose validation some reader uses, for ``fit(validate_at=...)``;
    None (every epoch) with ``[training] validate = "every_epoch"``.

    The last epoch always (the trial's value); with ``compared`` (a trial the pruner judges or
    compares others with, as the percentile pruner does a baseline) also the epochs where
    :func:`make_pruner`'s pruner reads it: ``percentile`` and ``median`` every epoch from the
    warm-up ``W`` on; ``hyperband`` its rungs ``W * REDUCTION_FACTOR**k``, where Optuna's
    successive halving judges a trial (a bracket ``b`` starts at rung ``k = b``). A
    multi-objective study reports nothing before the end: the last epoch only.
    """
    study, epochs = cfg.study, cfg.training.epochs
    if cfg.training.validation == "every_epoch":
        return None
    if not compared or study.objectives or study.pruner == "none":
        return {epochs}
    warm = warmup_steps(study.prune_after, epochs)
    if study.pruner in ("median", "percentile"):
        return set(range(warm, epochs + 1)) | {epochs}
    rungs, rung = {epochs}, warm  # hyperband
    while rung < epochs:
        rungs.add(rung)
        rung *= REDUCTION_FACTOR
    return rungs
