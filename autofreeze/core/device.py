"""A trial's device: whether the configured one exists here, and what a trial uses of it (bf16
autocast, channels_last) and its peak memory."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch

from autofreeze.errors import ConfigError


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


def check_device(device: str) -> None:
    """The configured device exists here, before any study or trial is touched."""
    kind, _, index = device.partition(":")
    backends = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None)}
    if kind in backends:
        api = backends[kind]
        count = api.device_count() if api is not None and api.is_available() else 0
        if count == 0:
            raise ConfigError(
                f'[training] device = "{device}": no {kind.upper()} device is visible here; '
                'use device = "cpu" or run on a machine that has one'
            )
        if index and int(index) >= count:
            raise ConfigError(
                f'[training] device = "{device}": only {count} {kind.upper()} device(s) here '
                f"(indices 0..{count - 1})"
            )
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError('[training] device = "mps": Apple MPS is not available here')
