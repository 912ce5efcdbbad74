"""Tiny study configs for tests: synthetic data, resnet10t at 16 px, two or three epochs; no
re-evaluation of the top plans, no probe and no dashboard output (notes, figures, report:
about 0.3 s a trial) unless a test asks for them. The soak and the dashboard, report and
browser tests run with the dashboard output on, the product's default."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BASE = """
[study]
name = "{name}"
n_trials = {n_trials}
pruner = "{pruner}"
seed = 0
reevaluate = {reevaluate}
probe = {probe}
dashboard = {dashboard}
{first_plans}
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


@dataclass(frozen=True)
class TinyStudy:
    """What a test may change of :data:`BASE`, the tiny study.

    Attributes:
        n_trials: ``[study] n_trials``.
        epochs: ``[training] epochs``.
        pruner: ``[study] pruner``.
        weights: ``[backbone] weights``.
        search: the body of ``[search]``.
        study_extra: more lines of ``[study]``.
        per_class: ``[dataset] train_per_class``.
        size: the image size, of the dataset and of training.
        reevaluate: ``[study] reevaluate``.
        probe: ``[study] probe``.
        dashboard: ``[study] dashboard``.
        first_plans: ``[study] first_plans``: the textbook recipes, so that a test of the
            queue, the budget or the report knows its first trials (the product's default
            adds the portfolio: tests/search/test_portfolio.py); None: unset, the default.
    """

    n_trials: int = 8
    epochs: int = 2
    pruner: str = "median"
    weights: str = "weights/source.safetensors"
    search: str = ""
    study_extra: str = ""
    per_class: int = 8
    size: int = 16
    reevaluate: int = 0
    probe: bool = False
    dashboard: bool = False
    first_plans: str | None = "recipes"

    def toml(self, name: str) -> str:
        """The study config named ``name``."""
        first = self.first_plans
        fields = asdict(self) | {
            "probe": str(self.probe).lower(),
            "dashboard": str(self.dashboard).lower(),
            "first_plans": "" if first is None else f'first_plans = "{first}"',
        }
        return BASE.format(name=name, **fields)


def write_study(folder: Path, name: str = "tiny", **fields: Any) -> Path:
    """Write the tiny study ``name`` to ``folder/<name>.toml``.

    Args:
        folder: where the config goes (its relative paths are relative to it).
        name: the study's name and the config's file name.
        **fields: the fields of :class:`TinyStudy` by name.

    Returns:
        The config's path.
    """
    path = folder / f"{name}.toml"
    path.write_text(TinyStudy(**fields).toml(name))
    return path
