"""Shared building steps of a study: source weights, the backbone for a plan, tensors for data.

Used by the objective, ``autofreeze train`` and ``autofreeze pretrain`` so all three build the
same thing from the same config.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from autofreeze.backbones import Backbone
from autofreeze.config import StudyConfig
from autofreeze.data import ImageDataset, TensorSplit, to_tensors
from autofreeze.errors import ConfigError, WeightsError
from autofreeze.freezing import FreezePlan
from autofreeze.registry import Registry, get_registry
from autofreeze.train import TrainConfig, fit

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_config(cfg: StudyConfig, **changes: Any) -> TrainConfig:
    t = cfg.training.model_dump(exclude={"image_size", "feature_cache"})
    return replace(TrainConfig(**t), **changes)


def image_size(cfg: StudyConfig, backbone: Backbone) -> int:
    return cfg.training.image_size or int(backbone.data_config["input_size"][-1])


_data_cache: dict[str, tuple[ImageDataset, TensorSplit, TensorSplit]] = {}


def load_data(
    cfg: StudyConfig,
    backbone: Backbone,
    registry: Registry | None = None,
    dataset: dict[str, Any] | None = None,
) -> tuple[ImageDataset, TensorSplit, TensorSplit]:
    """Decode the dataset once per process into normalised tensors (cached by content key)."""
    registry = registry or get_registry()
    name = (dataset or cfg.dataset)["name"]
    options = cfg.dataset_options(dataset)
    size = image_size(cfg, backbone)
    key = json.dumps(
        [name, options, backbone.data_config["mean"], backbone.data_config["std"], size],
        sort_keys=True,
        default=str,
    )
    if key not in _data_cache:
        data = registry.create_dataset(name, **options)
        kw = {
            "mean": backbone.data_config["mean"],
            "std": backbone.data_config["std"],
            "size": size,
        }
        _data_cache[key] = (data, to_tensors(data.train, **kw), to_tensors(data.val, **kw))
    return _data_cache[key]


def build_backbone(
    cfg: StudyConfig,
    num_classes: int,
    plan: FreezePlan | None = None,
    registry: Registry | None = None,
    seed: int | None = None,
) -> Backbone:
    """The backbone a plan trains: source weights for ``pretrained``, random for ``scratch``."""
    registry = registry or get_registry()
    torch.manual_seed(cfg.training.seed if seed is None else seed)
    weights = "none" if plan is not None and plan.init == "scratch" else cfg.weights_path()
    return registry.create_backbone(
        cfg.backbone.name,
        num_classes=num_classes,
        weights=weights,
        granularity=cfg.backbone.granularity,
    )


def ensure_weights(
    cfg: StudyConfig,
    progress: Progress = stderr_progress,
    registry: Registry | None = None,
    force: bool = False,
) -> Path | None:
    """Make the config's local weights file from its ``[backbone.pretrain]`` recipe if missing.

    The file is written atomically, so concurrent workers never read half a file; a second run
    finds it and does nothing (the recipe's result is cached on disk).
    """
    w = cfg.weights_path()
    if w in ("none", "default"):
        return None
    path = Path(w)
    if path.exists() and not force:
        return path
    recipe = cfg.backbone.pretrain
    if recipe is None:
        raise WeightsError(
            f"weights file {str(path)!r} does not exist; give a valid path in [backbone] weights, "
            f"or a [backbone.pretrain] recipe that makes it"
        )
    registry = registry or get_registry()
    source = dict(recipe.dataset)
    probe = registry.create_backbone(
        cfg.backbone.name, num_classes=2, weights="none", granularity=cfg.backbone.granularity
    )
    data, train, val = load_data(cfg, probe, registry, dataset=source)
    progress(
        f"pretraining {cfg.backbone.name} on {source['name']} {data.classes} "
        f"({len(train)} images, {recipe.epochs} epochs) -> {path}"
    )
    torch.manual_seed(recipe.seed)
    backbone = registry.create_backbone(
        cfg.backbone.name,
        num_classes=len(data.classes),
        weights="none",
        granularity=cfg.backbone.granularity,
    )
    plan = FreezePlan(boundary=0, head_lr=recipe.lr, backbone_lr_ratio=1.0)
    sched = registry.get_schedule("static")(
        boundary=0, n_blocks=backbone.n_blocks, epochs=recipe.epochs
    )
    tcfg = train_config(
        cfg, epochs=recipe.epochs, batch_size=recipe.batch_size, seed=recipe.seed, warmup_epochs=0.0
    )
    result = fit(
        backbone,
        plan,
        sched,
        train,
        val,
        tcfg,
        callback=lambda r: progress(
            f"  pretrain epoch {r.epoch}/{recipe.epochs} val_accuracy={r.val_accuracy:.3f}"
        ),
    )
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    meta = {
        "backbone": cfg.backbone.name,
        "source": json.dumps(source),
        "classes": json.dumps(data.classes),
        "val_accuracy": f"{result.final.val_accuracy:.4f}",
    }
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    progress(
        f"pretrained weights written to {path} "
        f"(source val_accuracy {result.final.val_accuracy:.3f})"
    )
    return path


def check_num_classes(data: ImageDataset) -> int:
    if data.num_classes < 2:
        raise ConfigError(f"dataset {data.name!r} has {data.num_classes} class; need at least 2")
    return data.num_classes


def train_plan(
    cfg: StudyConfig,
    plan: FreezePlan,
    out: Path,
    *,
    on: str = "train",
    registry: Registry | None = None,
    progress: Progress = stderr_progress,
) -> dict[str, Any]:
    """Train one plan and write ``out`` (.safetensors) plus its JSON sidecar; return the sidecar.

    ``on="train"`` reproduces a trial (same seed, same data) and reports validation metrics;
    ``on="train+val"`` trains on both splits for the final model (its metrics are then
    measured on data it saw, and say so).
    """
    from autofreeze.checkpoint import save_checkpoint
    from autofreeze.data import TensorSplit

    if on not in ("train", "train+val"):
        raise ConfigError(f"--on must be 'train' or 'train+val', not {on!r}")
    registry = registry or get_registry()
    ensure_weights(cfg, progress, registry)
    probe = build_backbone(cfg, num_classes=2, registry=registry)
    data, train, val = load_data(cfg, probe, registry)
    backbone = build_backbone(cfg, check_num_classes(data), plan, registry)
    plan.check(backbone.n_blocks)
    if on == "train+val":
        train = TensorSplit(torch.cat([train.x, val.x]), torch.cat([train.y, val.y]))
    schedule = registry.get_schedule(plan.schedule)(
        boundary=plan.boundary,
        n_blocks=backbone.n_blocks,
        epochs=cfg.training.epochs,
        **plan.schedule_params,
    )
    result = fit(
        backbone,
        plan,
        schedule,
        train,
        val,
        train_config(cfg),
        lambda r: progress(
            f"  epoch {r.epoch}/{cfg.training.epochs} [{r.phase}] val_accuracy={r.val_accuracy:.4f}"
        ),
    )
    info = {
        "backbone": cfg.backbone.name,
        "granularity": cfg.backbone.granularity,
        "source_weights": "none" if plan.init == "scratch" else cfg.weights_path(),
        "classes": data.classes,
        "plan": plan.to_dict(),
        "frozen_blocks": [b.name for b in backbone.blocks[: plan.boundary]],
        "trained_on": on,
        "image_size": image_size(cfg, backbone),
        "mean": list(backbone.data_config["mean"]),
        "std": list(backbone.data_config["std"]),
        "metrics": {"val_accuracy": result.final.val_accuracy, "val_loss": result.final.val_loss},
        "cost": result.cost,
        "study": cfg.study.name,
    }
    path = save_checkpoint(out, backbone, info)
    info["checkpoint"] = str(path)
    return info
