"""torchvision classification models as autofreeze backbones (``tv_resnet50``, ...)."""

from __future__ import annotations

__version__ = "0.1.0"
