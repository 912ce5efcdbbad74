"""autofreeze: search how to fine-tune a pretrained image backbone.

Kept import-light on purpose: ``autofreeze --help`` must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from autofreeze.runs.model import Model

__version__ = "0.1.0"


def load(path: str | Path) -> Model:
    """Load a checkpoint written by ``autofreeze train``: a model with its classes and
    preprocessing (``.predict(images)``, ``.evaluate(...)``); see :mod:`autofreeze.runs.model`."""
    from autofreeze.runs.model import load as load_model

    return load_model(path)
