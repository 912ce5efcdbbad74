"""Shared by the freezing and trainer tests: a tiny real backbone and one training run."""

from __future__ import annotations

import torch

from autofreeze.core.backbones import state_checksum
from autofreeze.core.train import TrainConfig, Trainer
from autofreeze.plugins.registry import Registry
from autofreeze.schedules import Static
from autofreeze.testing import tiny_split

REGISTRY = Registry()


def make(name: str = "resnet10t", **kw):
    torch.manual_seed(0)
    return REGISTRY.create_backbone(name, num_classes=3, **kw)


def block_sums(backbone) -> list[str]:
    return [state_checksum(backbone.parameters_of(b.param_names)) for b in backbone.blocks]


def run(backbone, plan, schedule_cls=Static, epochs=2, data=None, callback=None, **cfg):
    schedule = schedule_cls(
        boundary=plan.boundary, n_blocks=backbone.n_blocks, epochs=epochs, **plan.schedule_params
    )
    trainer = Trainer(backbone, plan, schedule, TrainConfig(epochs=epochs, batch_size=8, **cfg))
    train, val = data or (tiny_split(24), tiny_split(12, seed=1))
    return trainer, trainer.fit(train, val, callback)
