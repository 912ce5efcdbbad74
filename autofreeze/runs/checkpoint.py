"""Checkpoints of trained plans: a ``.safetensors`` file plus a JSON sidecar that describes it.

:func:`train_checkpoint` trains one plan of a study config and writes both (with the test
accuracy when the dataset holds a test split); :func:`train_best` does it for a study's best
trial, with the config the study ran. :mod:`autofreeze.runs.model` loads them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autofreeze.config import StudyConfig
from autofreeze.core.backbones import Backbone
from autofreeze.core.weights import save_state
from autofreeze.errors import ConfigError
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry
from autofreeze.progress import Progress, stderr_progress
from autofreeze.runs.model import Model, sidecar_path
from autofreeze.runs.prepare import prepare
from autofreeze.runs.pretrain import ensure_weights


def save_checkpoint(path: Path, backbone: Backbone, info: dict[str, Any]) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    save_state(path, backbone.model, {"backbone": backbone.name})
    sidecar_path(path).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return path


def train_checkpoint(
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
    measured on data it saw, and say so). Splits streamed from disk are joined as a view
    (:func:`autofreeze.data.tensors.cat`): the final training stays streamed, with the same
    batches as the in-memory join.
    """

    from autofreeze.core.train import fit
    from autofreeze.data.tensors import cat

    if on not in ("train", "train+val"):
        raise ConfigError(f"--on must be 'train' or 'train+val', not {on!r}")
    ensure_weights(cfg, progress, registry)
    prepared = prepare(cfg, registry)
    plan.check(prepared.n_blocks)
    backbone = prepared.backbone(plan)
    train, val = prepared.train, prepared.val
    if on == "train+val":
        train = cat(train, val)
    epochs = cfg.training.epochs

    def said(r: Any) -> None:
        val = "(not validated)" if r.val_accuracy is None else f"val_accuracy={r.val_accuracy:.4f}"
        progress(f"  epoch {r.epoch}/{epochs} [{r.phase}] {val}")

    result = fit(
        backbone,
        plan,
        prepared.schedule(plan),
        train,
        val,
        cfg.training,
        said,
        # only the final metrics are read, unless the user asked for every epoch's
        validate_at=None if cfg.training.validation == "every_epoch" else {epochs},
    )
    info = {
        "backbone": cfg.backbone.name,
        "granularity": cfg.backbone.granularity,
        "source_weights": "none" if plan.init == "scratch" else cfg.weights_path(),
        "classes": prepared.data.classes,
        "plan": plan.to_dict(),
        "frozen_blocks": [b.name for b in backbone.blocks[: plan.boundary]],
        "trained_on": on,
        "image_size": prepared.image_size,
        "mean": list(prepared.data_config["mean"]),
        "std": list(prepared.data_config["std"]),
        "metrics": {"val_accuracy": result.final.val_accuracy, "val_loss": result.final.val_loss},
        "cost": result.cost,
        "study": cfg.study.name,
        "dataset": {"name": cfg.dataset["name"], **cfg.dataset_options()},
    }
    if prepared.data.test is not None:  # held out from the search: the honest figure
        model = Model(
            backbone.model, info["classes"], prepared.image_size, info["mean"], info["std"], info
        )
        info["metrics"]["test_accuracy"] = model.evaluate(prepared.data.test)["accuracy"]
    path = save_checkpoint(out, backbone, info)
    info["checkpoint"] = str(path)
    return info


def train_best(
    cfg: StudyConfig,
    out: Path,
    *,
    on: str = "train+val",
    epochs: int | None = None,
    progress: Progress = stderr_progress,
    trial: int | None = None,
) -> dict[str, Any]:
    """Train the best plan of ``cfg``'s study, or trial number ``trial``'s (any point of a
    multi-objective study's Pareto front), with the config the study ran (its epochs, data
    and weights): by default the final model, on train and validation; ``on="train"``
    reproduces the trial. ``epochs`` overrides."""
    from autofreeze.study import best_plan, stored_config, trial_plan
    from autofreeze.study.storage import load_existing_study

    study = load_existing_study(cfg.storage_url, cfg.study.name)
    plan = best_plan(study) if trial is None else trial_plan(study, trial)
    ran = stored_config(study, cfg.storage_url, {"training.epochs": epochs})
    return train_checkpoint(ran, plan, out, on=on, progress=progress)
