"""From a study config to what a trial trains: one :func:`prepare` per process, then a backbone
and a schedule per plan.

:func:`prepare` learns the block count and the preprocessing from a reference backbone (local
weights checked by loading them once, nothing downloaded), and decodes the dataset once into
tensors. Trials, the final training (``autofreeze train``) and the pretraining recipe all
build from it, so they build the same thing from the same config.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from autofreeze.cache.store import CACHE_FOLDER, default_memory_bytes
from autofreeze.config import StudyConfig
from autofreeze.core.backbones import Backbone
from autofreeze.core.device import check_device
from autofreeze.data.decode import Decoding, decode_split
from autofreeze.data.images import ImageDataset
from autofreeze.data.tensors import TensorSplit
from autofreeze.errors import ConfigError
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry, get_registry
from autofreeze.progress import Progress, stderr_progress
from autofreeze.schedules import Schedule


@dataclass
class Prepared:
    """What every trial of a process shares: the backbone's cut, the data as tensors."""

    cfg: StudyConfig
    registry: Registry
    n_blocks: int
    data_config: dict[str, Any]
    image_size: int
    data: ImageDataset
    train: TensorSplit
    val: TensorSplit
    head_fan_in: int = 1  # inputs per output of the head's weight (its init scale: 1/sqrt)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def steps_per_run(self) -> int:
        """Optimizer steps of one trial: epochs times batches per epoch."""
        t = self.cfg.training
        return t.epochs * math.ceil(len(self.train) / t.batch_size)

    def backbone(self, plan: FreezePlan, seed: int | None = None) -> Backbone:
        """The backbone ``plan`` trains: the config's weights for ``pretrained``, random for
        ``scratch``; its head is seeded with the training seed."""
        cfg = self.cfg
        torch.manual_seed(cfg.training.seed if seed is None else seed)
        weights = "none" if plan.init == "scratch" else cfg.weights_path()
        return self.registry.create_backbone(
            cfg.backbone.name,
            num_classes=self.num_classes,
            weights=weights,
            granularity=cfg.backbone.granularity,
        )

    def schedule(self, plan: FreezePlan, epochs: int | None = None) -> Schedule:
        """The plan's schedule over the training budget (knobs checked by the schedule)."""
        return self.registry.get_schedule(plan.schedule)(
            boundary=plan.boundary,
            n_blocks=self.n_blocks,
            epochs=epochs or self.cfg.training.epochs,
            **plan.schedule_params,
        )


def reference_backbone(cfg: StudyConfig, registry: Registry, load_weights: bool = True) -> Backbone:
    """The config's backbone: its blocks and preprocessing. A local weights file is loaded
    into it once, so that a file that is not weights, or is another model's, is one error
    before the study is touched rather than a failure in every pretrained trial; hub weights
    are not fetched here."""
    weights = cfg.weights_path() if load_weights else "none"
    return registry.create_backbone(
        cfg.backbone.name,
        num_classes=2,
        weights="none" if weights == "default" else weights,
        granularity=cfg.backbone.granularity,
    )


def prepare(
    cfg: StudyConfig,
    registry: Registry | None = None,
    dataset: dict[str, Any] | None = None,
    progress: Progress = stderr_progress,
) -> Prepared:
    """Probe the backbone and decode the dataset (``[dataset]``, or another dataset table: the
    pretraining recipe's, which makes the weights instead of checking them)."""
    check_device(cfg.training.device)
    registry = registry or get_registry()
    backbone = reference_backbone(cfg, registry, load_weights=dataset is None)
    size = cfg.training.image_size or int(backbone.data_config["input_size"][-1])
    t = cfg.training
    decoding = Decoding(
        folder=cfg.base_dir / CACHE_FOLDER / "images",
        memory_bytes=default_memory_bytes() if t.data_memory is None else t.data_memory * 2**20,
        workers=t.decode_workers or min(8, os.cpu_count() or 1),
        skip_bad=t.skip_bad_images,
        progress=progress,
    )
    data, train, val = load_data(
        registry,
        dataset or cfg.dataset,
        cfg.dataset_options(dataset),
        backbone.data_config,
        size,
        decoding,
    )
    if data.num_classes < 2:
        raise ConfigError(f"dataset {data.name!r} has {data.num_classes} class; need at least 2")
    weights = [p for p in backbone.parameters_of(backbone.head_param_names) if p.ndim >= 2]
    fan_in = max((p[0].numel() for p in weights), default=1)
    return Prepared(
        cfg, registry, backbone.n_blocks, dict(backbone.data_config), size, data, train, val, fan_in
    )


_decoded: dict[str, tuple[ImageDataset, TensorSplit, TensorSplit]] = {}


def load_data(
    registry: Registry,
    spec: dict[str, Any],
    options: dict[str, Any],
    data_config: dict[str, Any],
    size: int,
    decoding: Decoding = Decoding(),
) -> tuple[ImageDataset, TensorSplit, TensorSplit]:
    """Decode a dataset into uint8 tensors (normalised per batch), once per process (keyed by
    its content) and, for files, once per machine."""
    mean, std = data_config["mean"], data_config["std"]
    key = json.dumps(
        [spec["name"], options, mean, std, size, decoding.skip_bad], sort_keys=True, default=str
    )
    if key not in _decoded:
        data = registry.create_dataset(spec["name"], **options)
        splits = []
        for label, images in (("train", data.train), ("val", data.val)):
            split = decode_split(
                images, mean=mean, std=std, size=size, decoding=decoding, label=label
            )
            splits.append(split)
        _decoded[key] = (data, splits[0], splits[1])
    return _decoded[key]
