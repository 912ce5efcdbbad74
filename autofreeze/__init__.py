"""autofreeze: search how to fine-tune a pretrained image backbone.

Kept import-light on purpose: ``autofreeze --help`` must not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
