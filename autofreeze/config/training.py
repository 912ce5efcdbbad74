"""The ``[training]`` table: how one plan trains (epochs, batch, optimizer, device, caching,
augmentation, data in memory)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from autofreeze.config.base import Strict
from autofreeze.plan import Augment


class TrainConfig(Strict):
    """How to train one plan: the study config's ``[training]`` table, and what
    :func:`autofreeze.core.train.fit` takes.

    ``amp`` and ``channels_last`` default to ``auto``: on for CUDA, off on the CPU; forcing them
    on the CPU runs the same code path (bf16 autocast works on the CPU too).
    """

    epochs: int = Field(default=5, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)  # default: batch_size
    image_size: int | None = Field(default=None, ge=8, le=1024)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    warmup_epochs: float = Field(default=0.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    grad_clip: float | None = Field(default=None, gt=0)
    device: str = "cpu"
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    phase_optimizer: Literal["keep", "reset"] = "keep"
    augment: Augment = "none"  # every plan's policy unless [search] augment searches it
    mixup: float = Field(default=0.0, ge=0, le=10)  # Beta alpha; 0: off
    cutmix: float = Field(default=0.0, ge=0, le=10)  # Beta alpha; 0: off
    seed: int = 0
    feature_cache: bool = True
    cache_size: int | None = Field(default=None, ge=1)  # MiB on disk; default: 1/4 of free disk
    cache_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    cached_views: int = Field(default=0, ge=0, le=64)  # with augment: views cached per image
    skip_bad_images: bool = False  # images that do not decode are left out (and said), not fatal
    data_memory: int | None = Field(default=None, ge=1)  # MiB; larger splits stream from disk
    decode_workers: int | None = Field(default=None, ge=1, le=64)  # default: cores, at most 8
    # the key ``validate`` (pydantic's BaseModel has a method of that name): "rungs" validates
    # only at the epochs whose value is read (the pruner's, the last; see
    # autofreeze.study.sampling.validation_epochs), "every_epoch" keeps full validation curves
    validation: Literal["rungs", "every_epoch"] = Field(default="rungs", alias="validate")

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: Any) -> Any:
        return {True: "flip", False: "none"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|mps|(cuda|xpu)(:\d+)?", v):
            raise ValueError(f'must be "cpu", "cuda", "cuda:N", "mps" or "xpu[:N]", not {v!r}')
        return v
