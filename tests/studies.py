"""Tiny study configs for tests: synthetic data, resnet10t at 16 px, two or three epochs; no
re-evaluation of the top plans, no probe and no dashboard output (notes, figures, report:
about 0.3 s a trial) unless a test asks for them. The soak and the dashboard, report and
browser tests run with the dashboard output on, the product's default."""

from __future__ import annotations

from pathlib import Path

BASE = """
[study]
name = "{name}"
n_trials = {n_trials}
pruner = "{pruner}"
seed = 0
reevaluate = {reevaluate}
probe = {probe}
dashboard = {dashboard}
{study_extra}

[backbone]
name = "resnet10t"
weights = "{weights}"

[backbone.pretrain]
epochs = 2
batch_size = 16

[backbone.pretrain.dataset]
name = "synthetic"
num_classes = 4
train_per_class = 12
val_per_class = 4
image_size = 16
seed = 7

[dataset]
name = "synthetic"
num_classes = 3
train_per_class = {per_class}
val_per_class = 6
image_size = {size}

[training]
epochs = {epochs}
batch_size = 8
image_size = {size}

[search]
{search}
"""


def write_study(
    folder: Path,
    name: str = "tiny",
    *,
    n_trials: int = 8,
    epochs: int = 2,
    pruner: str = "median",
    weights: str = "weights/source.safetensors",
    search: str = "",
    study_extra: str = "",
    per_class: int = 8,
    size: int = 16,
    reevaluate: int = 0,
    probe: bool = False,
    dashboard: bool = False,
) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        BASE.format(
            name=name,
            n_trials=n_trials,
            epochs=epochs,
            pruner=pruner,
            weights=weights,
            search=search,
            study_extra=study_extra,
            per_class=per_class,
            size=size,
            reevaluate=reevaluate,
            probe=str(probe).lower(),
            dashboard=str(dashboard).lower(),
        )
    )
    return path
