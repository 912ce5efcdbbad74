"""The Optuna objective: suggest a plan, build, train, report every epoch, prune, record cost."""

from __future__ import annotations

import math
import time
from typing import Any

import optuna
import torch

from autofreeze import pipeline
from autofreeze.cache import FeatureCache, cacheable
from autofreeze.config import StudyConfig
from autofreeze.registry import Registry, get_registry
from autofreeze.space import suggest_plan
from autofreeze.train import EpochResult, TrainingDiverged, fit


class TrialFailed(RuntimeError):
    """A trial that cannot finish (diverged, out of memory); the study goes on."""


class Objective:
    """Callable objective for ``study.optimize``; one instance per worker process."""

    def __init__(
        self,
        cfg: StudyConfig,
        registry: Registry | None = None,
        progress: pipeline.Progress | None = None,
        n_trials: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.registry = registry or get_registry()
        self.progress = progress or (lambda msg: None)
        self.n_trials = n_trials
        probe = pipeline.build_backbone(cfg, num_classes=2, registry=self.registry)
        self.n_blocks = probe.n_blocks
        self.data, self.train, self.val = pipeline.load_data(cfg, probe, self.registry)
        self.num_classes = pipeline.check_num_classes(self.data)
        self.current_trial: int | None = None
        self.features = FeatureCache()
        self.training = False  # True while a trial's own code runs (Ctrl-C may cut it)

    def __call__(self, trial: optuna.Trial) -> float:
        self.current_trial = trial.number
        self.training = True
        try:
            return self._run(trial)
        finally:
            self.training = False

    def _run(self, trial: optuna.Trial) -> float:
        t0 = time.perf_counter()  # the trial's wall time: building, caching and training
        cfg = self.cfg
        plan = suggest_plan(trial, cfg.search, self.registry, self.n_blocks)
        backbone = pipeline.build_backbone(cfg, self.num_classes, plan, self.registry)
        frozen = backbone.blocks[: plan.boundary]
        total = sum(p.numel() for p in backbone.model.parameters())
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("frozen_blocks", [b.name for b in frozen])
        trial.set_user_attr(
            "frozen_param_fraction",
            round(sum(backbone.block_param_count(b) for b in frozen) / total, 6),
        )
        trial.set_user_attr("schedule", plan.schedule)
        schedule = self.registry.get_schedule(plan.schedule)(
            boundary=plan.boundary,
            n_blocks=backbone.n_blocks,
            epochs=cfg.training.epochs,
            **plan.schedule_params,
        )
        prunable = "baseline" not in trial.user_attrs  # baselines always run to the end
        metric = cfg.study.metric
        label = f"#{trial.number} {trial.user_attrs.get('baseline', 'searched')}"

        def report(r: EpochResult) -> None:
            value = getattr(r, metric)
            trial.report(value, step=r.epoch)  # the common axis is the epoch
            if r.event:
                self.progress(f"  {label} {r.event}")
            self.progress(
                f"  {label} epoch {r.epoch}/{cfg.training.epochs} [{r.phase}] {metric}={value:.4f}"
            )
            # a head-only warm-up (gradual, lp_ft) is not judged before its backbone trains
            warm_up = r.first_trainable == backbone.n_blocks > plan.boundary
            if prunable and not warm_up and trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", r.epoch)
                raise optuna.TrialPruned(f"pruned at epoch {r.epoch} ({metric}={value:.4f})")

        features = None
        if cfg.training.feature_cache and cacheable(backbone, plan, cfg.training.augment):
            # every block frozen: the classifier trains on pooled features computed once
            features = self.features.get(backbone, plan, (), self.train, self.val)
        trial.set_user_attr("feature_cache", features is not None)
        try:
            result = fit(
                backbone,
                plan,
                schedule,
                self.train,
                self.val,
                pipeline.train_config(cfg),
                report,
                features=features,
            )
        except TrainingDiverged as exc:
            return self._fail(trial, f"diverged: {exc}")
        except torch.OutOfMemoryError:
            return self._fail(trial, "out of memory")
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        trial.set_user_attr("phase_events", result.events)
        for key, value in result.cost.items():
            if key != "seconds":  # the trial's wall time (set above) includes building it
                trial.set_user_attr(key, round(value, 3))
        trial.set_user_attr(
            "history",
            [
                {
                    "epoch": e.epoch,
                    "phase": e.phase,
                    "val_accuracy": round(e.val_accuracy, 5),
                    "val_loss": round(e.val_loss, 5),
                    "train_loss": round(e.train_loss, 5),
                }
                for e in result.history
            ],
        )
        value = getattr(result.final, metric)
        if not math.isfinite(value):
            return self._fail(trial, f"{metric} is {value}")
        return value

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str) -> Any:
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailed(reason)
