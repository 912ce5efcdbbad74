"""What a trial uses of its device: bf16 autocast, channels_last, and its peak memory."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch


def use_amp(cfg: Any, device: torch.device) -> bool:
    if cfg.amp == "bf16":
        return True
    # auto: bf16 where the GPU computes it natively (Ampere and newer); no loss scaling needed
    return cfg.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def use_channels_last(cfg: Any, device: torch.device) -> bool:
    return cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
