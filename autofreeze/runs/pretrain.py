"""The ``[backbone.pretrain]`` recipe: make a missing local weights file by training the
backbone on a source dataset (how the quickstart gets a pretrained backbone offline)."""

from __future__ import annotations

import json
from pathlib import Path

from autofreeze.config import StudyConfig
from autofreeze.core.train import fit
from autofreeze.core.weights import save_state
from autofreeze.errors import WeightsError
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry
from autofreeze.progress import Progress, detail, stderr_progress
from autofreeze.runs.prepare import prepare


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
    source = dict(recipe.dataset)
    prepared = prepare(cfg, registry, dataset=source)
    progress(
        f"pretraining {cfg.backbone.name} on {source['name']} {prepared.data.classes} "
        f"({len(prepared.train)} images, {recipe.epochs} epochs) -> {path}"
    )
    plan = FreezePlan(boundary=0, head_lr=recipe.lr, backbone_lr_ratio=1.0, init="scratch")
    backbone = prepared.backbone(plan, seed=recipe.seed)
    settings = cfg.training.model_copy(
        update={
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "seed": recipe.seed,
            "warmup_epochs": 0.0,
        }
    )
    result = fit(
        backbone,
        plan,
        prepared.schedule(plan, recipe.epochs),
        prepared.train,
        prepared.val,
        settings,
        callback=lambda r: detail(
            progress,
            f"  pretrain epoch {r.epoch}/{recipe.epochs} val_accuracy={r.val_accuracy:.3f}",
        ),
    )
    accuracy = result.final.val_accuracy
    meta = {
        "backbone": cfg.backbone.name,
        "source": json.dumps(source),
        "classes": json.dumps(prepared.data.classes),
        "val_accuracy": f"{accuracy:.4f}",
    }
    save_state(path, backbone.model, meta)
    progress(f"pretrained weights written to {path} (source val_accuracy {accuracy:.3f})")
    return path
