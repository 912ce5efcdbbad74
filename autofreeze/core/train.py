"""Plain-torch training loop for one freeze plan. No optuna here: it reports through a callback.

Its settings are :class:`autofreeze.config.TrainConfig` (the study config's ``[training]``
table, re-exported here). Data are held as tensors (small datasets are decoded once, not every
epoch). Each epoch asks the schedule which blocks train, syncs ``requires_grad`` and the
optimizer's param groups, trains, evaluates on validation where asked (``validate_at``: only
the epochs whose value is read; the last always) and calls ``callback(EpochResult)``; the
callback may raise to stop the run (the objective raises ``optuna.TrialPruned`` there).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autofreeze.config import TrainConfig
from autofreeze.core.backbones import Backbone, parameter_count
from autofreeze.core.device import peak_memory_mb, use_amp, use_channels_last
from autofreeze.core.freezing import Freezer, follow, lr_factor, make_optimizer
from autofreeze.core.split import Split, SuffixNet
from autofreeze.data.augment import augment_batch, mix, pick_views
from autofreeze.data.tensors import TensorSplit, prefetched
from autofreeze.plan import FreezePlan
from autofreeze.schedules import Schedule

__all__ = ["EpochResult", "FitResult", "TrainConfig", "Trainer", "TrainingDiverged", "fit"]
__all__ += ["lr_factor"]

log = logging.getLogger("autofreeze.core.train")
SYNC_EVERY = 16  # optimizer steps between two reads of the loss by the host


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class EpochResult:
    """One epoch: ``val_loss`` and ``val_accuracy`` are None where it was not validated (see
    ``validate_at`` of :meth:`Trainer.fit`), ``val_seconds`` then 0; ``seconds`` includes it."""

    epoch: int
    phase: str
    first_trainable: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    val_seconds: float = 0.0
    lrs: dict[str, float] = field(default_factory=dict)
    event: str = ""  # the phase change at the start of this epoch, if any
    cached: int = 0  # blocks 0..cached-1 ran from a cache this epoch (n_blocks: head only)


@dataclass
class FitResult:
    history: list[EpochResult]
    cost: dict[str, float]
    events: list[str] = field(default_factory=list)

    @property
    def final(self) -> EpochResult:
        """The last epoch: always validated."""
        return self.history[-1]


class Trainer:
    """Trains one backbone under one plan and schedule (one device, no DDP)."""

    def __init__(
        self,
        backbone: Backbone,
        plan: FreezePlan,
        schedule: Schedule,
        cfg: TrainConfig,
    ) -> None:
        self.backbone = backbone
        self.plan = plan
        self.schedule = schedule
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.freezer = Freezer(backbone, plan)
        self.amp = use_amp(cfg, self.device)
        self.channels_last = use_channels_last(cfg, self.device)
        self.model = backbone.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # what a batch runs through: the model, or only its classifier on cached features
        self.net: nn.Module = self.model
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.net
        self.optimizer: torch.optim.Optimizer | None = None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.events: list[str] = []
        # blocks a schedule freezes for good -> (split, train, val) at that boundary, or None
        self.refreeze: Callable[[int], tuple[Split, TensorSplit, TensorSplit] | None] | None = None
        self.cached_at = 0  # blocks below it are not cached again (tried once per boundary)
        self.cached = 0  # blocks below it run from a cache
        # images are augmented per batch unless the trial trains on cached (augmented) views
        self.policy = plan.augment or cfg.augment
        self.augment_online = self.policy != "none"
        self.mixing = cfg.mixup > 0 or cfg.cutmix > 0  # always online

    # -- phases -------------------------------------------------------------------------------
    def _event(self, msg: str) -> None:
        self.events.append(msg)
        log.info(msg)

    def enter_phase(self, epoch: int) -> tuple[str, float]:
        self.epoch = epoch  # the epoch train_epoch trains next (Schedule.observe gets it)
        phase = self.schedule.phase(epoch)
        first = self.schedule.clamp(phase.first_trainable)
        if self.optimizer is not None and first == self.freezer.first_trainable:
            return phase.label, phase.lr_scale
        before = self.freezer.first_trainable
        self.freezer.set_first_trainable(first)
        if self.optimizer is None:
            self.optimizer = make_optimizer(self.cfg, self.freezer.param_groups())
        else:
            mode = self.cfg.phase_optimizer
            self.optimizer, said = follow(self.optimizer, self.freezer, before, mode, self.cfg)
            self._event(f"epoch {epoch}: {said}")
        if self.cfg.compile:
            # a fresh graph per trainable set. Dynamo also guards on requires_grad (the compile
            # test passes without this on torch 2.14); the reset keeps one graph per phase
            torch._dynamo.reset()
            self.forward = torch.compile(self.net)
        return phase.label, phase.lr_scale

    # -- loops --------------------------------------------------------------------------------
    def _prep(
        self,
        data: TensorSplit,
        rows: torch.Tensor | slice,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Rows of ``data`` on the device as the model takes them: augmented by the policy
        with ``generator`` (before normalising: policies work on uint8), normalised there."""
        x = data.rows(rows, pin=self.device.type == "cuda").to(self.device, non_blocking=True)
        if generator is not None:
            x = augment_batch(x.clone() if isinstance(rows, slice) else x, generator, self.policy)
        x = data.prepare(x)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train_epoch(
        self,
        data: TensorSplit,
        step: int,
        total: int,
        warmup: int,
        lr_scale: float,
        generator: torch.Generator,
    ) -> tuple[float, int]:
        assert self.optimizer is not None
        self.freezer.train_mode()
        norms = self.freezer.grad_norms() if self.schedule.wants_grad_norms else None
        order = torch.randperm(len(data), generator=generator)
        # losses summed on the device; the host reads them every SYNC_EVERY steps (a diverged
        # run still stops within that many steps), not at every step
        loss_sum, seen, total_loss = torch.zeros((), device=self.device), 0, 0.0
        batch = self.cfg.batch_size
        picks = [order[start : start + batch] for start in range(0, len(data), batch)]
        rows = [pick_views(idx, len(data), data.views, generator) for idx in picks]

        def fetch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            # in order, in one thread: the draws from ``generator`` are the same with prefetch
            x = self._prep(data, rows[i], generator if self.augment_online else None)
            y = data.y[picks[i]].to(self.device)
            if self.mixing:  # soft labels
                x, y = mix(x, y, self.backbone.num_classes, generator, cfg.mixup, cfg.cutmix)
            return x, y

        cfg = self.cfg
        for i, (x, y) in enumerate(prefetched(fetch, range(len(picks)), ahead=data.on_disk)):
            factor = lr_factor(step, total, warmup) * lr_scale
            ramp = min(1.0, (step + 1) / max(1, warmup)) * lr_scale  # the warmup, no cosine
            scales = self.schedule.block_lr_scales(step / max(1, total))
            self.freezer.write_lrs(self.optimizer.param_groups, factor, scales, ramp)
            with self._autocast():
                loss = self.loss_fn(self.forward(x).float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if norms is not None:
                norms.add()
            if self.cfg.grad_clip:
                nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]],
                    self.cfg.grad_clip,
                )
            self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            seen += len(y)
            step += 1
            if step % SYNC_EVERY == 0 or i == len(picks) - 1:
                total_loss = float(loss_sum)
                if not math.isfinite(total_loss):
                    raise TrainingDiverged(f"training loss is {total_loss} by step {step}")
        if norms is not None:
            self.schedule.observe(self.epoch, norms.read())
        return total_loss / max(1, seen), step

    @torch.no_grad()
    def evaluate(self, data: TensorSplit) -> tuple[float, float]:
        """Validation loss and accuracy (plain cross-entropy, no label smoothing)."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        size = self.cfg.eval_batch_size or self.cfg.batch_size  # no more memory than training

        def fetch(start: int) -> tuple[torch.Tensor, torch.Tensor]:
            rows = slice(start, start + size)
            return self._prep(data, rows), data.y[rows].to(self.device)

        for x, y in prefetched(fetch, range(0, len(data), size), ahead=data.on_disk):
            with self._autocast():
                logits = self.forward(x).float()
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = max(1, len(data))
        return float(loss_sum) / n, int(correct) / n

    def _on_device(self, split: TensorSplit, max_bytes: int = 2**30) -> TensorSplit:
        """Small datasets move to the accelerator once, not batch by batch every epoch."""
        if self.device.type == "cpu" or split.on_disk or split.nbytes > max_bytes:
            return split
        return split.to(self.device)

    def use_features(self, classifier: nn.Module) -> None:
        """Train only ``classifier``, on cached pre-logits features instead of images."""
        self.net = classifier
        self.forward = classifier
        self.cached = self.backbone.n_blocks
        self.augment_online = False

    def use_prefix(self, split: Split) -> None:
        """Train on cached outputs of the frozen prefix: batches run only the suffix (blocks
        from the boundary on and the head), in the mode the model is in."""
        self.net = SuffixNet(split, self.model)
        self.forward = torch.compile(self.net) if self.cfg.compile else self.net
        self.cached_at = self.cached = split.boundary
        self.augment_online = False

    def _cache_from(self, first: int, epoch: int, data: tuple[TensorSplit, TensorSplit]) -> Any:
        """A schedule froze blocks ``..first-1`` for good: train on their cached output."""
        self.cached_at = first  # tried once per boundary, whatever the outcome
        got = self.refreeze(first) if self.refreeze is not None else None
        if got is None:
            return data
        split, train, val = got
        self.use_prefix(split)
        self._event(f"epoch {epoch}: blocks 0..{first - 1} stay frozen: their output is cached")
        return self._on_device(train), self._on_device(val)

    def fit(
        self,
        train: TensorSplit,
        val: TensorSplit,
        callback: Callable[[EpochResult], None] | None = None,
        validate_at: Collection[int] | None = None,
    ) -> FitResult:
        """Train for ``cfg.epochs``; ``train``/``val`` are images, or features after
        :meth:`use_features`. ``validate_at``: the 1-based epochs to evaluate ``val`` after
        (None: every epoch); the last epoch is always evaluated."""
        cfg = self.cfg
        train, val = self._on_device(train), self._on_device(val)
        generator = torch.Generator().manual_seed(cfg.seed)
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        history: list[EpochResult] = []
        step, train_seconds, val_seconds, max_trainable = 0, 0.0, 0.0, 0
        t_start = time.perf_counter()
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            n_events = len(self.events)
            label, lr_scale = self.enter_phase(epoch)
            if self.schedule.freezes_forward and self.freezer.first_trainable > self.cached_at:
                train, val = self._cache_from(self.freezer.first_trainable, epoch, (train, val))
            max_trainable = max(max_trainable, parameter_count(self.model, trainable_only=True))
            train_loss, step = self.train_epoch(train, step, total, warmup, lr_scale, generator)
            train_seconds += time.perf_counter() - t0
            val_loss, val_acc, t_val = None, None, 0.0
            if validate_at is None or epoch + 1 in validate_at or epoch + 1 == cfg.epochs:
                t_val = time.perf_counter()
                val_loss, val_acc = self.evaluate(val)
                t_val = time.perf_counter() - t_val
                val_seconds += t_val
            assert self.optimizer is not None
            result = EpochResult(
                epoch=epoch + 1,
                phase=label,
                first_trainable=self.freezer.first_trainable,
                train_loss=train_loss,
                val_loss=val_loss,
                val_accuracy=val_acc,
                seconds=time.perf_counter() - t0,
                val_seconds=t_val,
                event="; ".join(self.events[n_events:]),
                cached=self.cached,
                lrs={
                    g["name"].removesuffix(":no_wd"): g["planned_lr"] * lr_scale
                    for g in self.optimizer.param_groups
                },
            )
            history.append(result)
            if callback is not None:
                callback(result)
        cost = {
            "seconds": time.perf_counter() - t_start,
            "validation_seconds": val_seconds,  # evaluating val, within "seconds"
            "train_examples_per_second": len(train) * cfg.epochs / max(train_seconds, 1e-9),
            "trainable_params": float(max_trainable),
            "total_params": float(parameter_count(self.model)),
            "peak_memory_mb": peak_memory_mb(self.device),
        }
        return FitResult(history, cost, list(self.events))


@dataclass(frozen=True)
class CachedInputs:
    """What a trial reads from caches instead of running frozen blocks (see :func:`fit`).

    Attributes:
        features: cached pre-logits features of ``train`` and ``val`` (see
            :mod:`autofreeze.cache.activations`): only the classifier runs.
        prefix: a split at the plan's boundary and the prefix outputs of ``train`` and
            ``val``: only the suffix runs.
        refreeze: for a schedule that freezes blocks for good, the split at a new first
            trainable block and its prefix outputs (None where it cannot split): those blocks
            are cached from then on.
    """

    features: tuple[TensorSplit, TensorSplit] | None = None
    prefix: tuple[Split, TensorSplit, TensorSplit] | None = None
    refreeze: Callable[[int], tuple[Split, TensorSplit, TensorSplit] | None] | None = None


def fit(
    backbone: Backbone,
    plan: FreezePlan,
    schedule: Schedule,
    train: TensorSplit,
    val: TensorSplit,
    cfg: TrainConfig,
    callback: Callable[[EpochResult], None] | None = None,
    *,
    validate_at: Collection[int] | None = None,
    **cached: Any,
) -> FitResult:
    """Train ``backbone`` under ``plan`` and ``schedule``; see :class:`Trainer`.

    With ``features`` (cached pre-logits features of ``train`` and ``val``, see
    :mod:`autofreeze.cache.activations`) only the classifier runs; with ``prefix`` (a split at
    the plan's boundary and the prefix outputs of ``train`` and ``val``) only the suffix does;
    with ``refreeze``, blocks a schedule freezes for good are cached from then on.

    Args:
        backbone: the model to train.
        plan: the freeze plan.
        schedule: which blocks train in each epoch.
        train: the training images.
        val: the validation images.
        cfg: the ``[training]`` settings.
        callback: called with each epoch's result; it may raise to stop the run.
        validate_at: the 1-based epochs whose validation is read (None: every epoch); the
            last is always validated, the others have ``val_loss = val_accuracy = None``.
        **cached: the fields of :class:`CachedInputs` by name (``features``, ``prefix``,
            ``refreeze``), each None by default.
    """
    inputs = CachedInputs(**cached)
    trainer = Trainer(backbone, plan, schedule, cfg)
    trainer.refreeze = inputs.refreeze
    if inputs.features is not None:
        trainer.use_features(backbone.model.get_classifier())
        train, val = inputs.features
    elif inputs.prefix is not None:
        split, train, val = inputs.prefix
        trainer.use_prefix(split)
    return trainer.fit(train, val, callback, validate_at)
