"""The ``[backbone]`` table and its ``[backbone.pretrain]`` recipe."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from autofreeze.config.base import Strict


class PretrainSection(Strict):
    """How to make a missing local weights file: train the backbone on a source dataset."""

    dataset: dict[str, Any]
    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0

    @field_validator("dataset")
    @classmethod
    def _has_name(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "name" not in v:
            raise ValueError("needs a 'name', e.g. { name = \"digits\", classes = [0, 1] }")
        return v


class BackboneSection(Strict):
    name: str = Field(min_length=1)
    weights: str = "none"
    granularity: Literal["block", "stage"] = "block"
    pretrain: PretrainSection | None = None
