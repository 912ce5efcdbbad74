"""The ``[search]`` table of a study config: the search space, each entry fixed or searched.

Numeric knobs are a fixed value (``head_lr = 1e-3``) or a ``[low, high]`` range; categorical
ones a fixed value or a list of choices (``space.py`` turns each into one dimension).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from autofreeze.config.base import Strict
from autofreeze.plan import LIMITS, Augment, BnMode, Init

__all__ = ["FloatRange", "SearchSection", "WarmStudy"]

WARM_AUTO = "auto"  # a [search] warm_start entry: the most similar earlier studies
WARM_ENTRY = (
    'is a study config path ("studies/other.toml"), a table { storage = "sqlite:///x.db", '
    'study = "name" } or "auto"'
)


class FloatRange(Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def _range(value: Any, *, log: bool) -> Any:
    """``x`` -> fixed, ``[lo, hi]`` -> range; anything else is left for pydantic to reject."""
    if isinstance(value, list):
        if len(value) != 2:
            raise ValueError(f"a range is [low, high], got {len(value)} values")
        return {"low": value[0], "high": value[1], "log": log}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"low": value, "high": value, "log": log and value > 0}
    return value


class WarmStudy(Strict):
    """An earlier study of ``[search] warm_start`` by its address; without ``storage``, in this
    study's storage."""

    storage: str | None = Field(default=None, min_length=1)
    study: str = Field(min_length=1)


def _warm_entries(value: Any) -> Any:
    """``warm_start``: one entry or a list of them, each checked (see :data:`WARM_ENTRY`)."""
    entries = value if isinstance(value, list) else [value]
    for entry in entries:
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - set(WarmStudy.model_fields))
            if unknown or not isinstance(entry.get("study"), str) or not entry["study"]:
                what = f"unknown key {unknown[0]!r}" if unknown else "needs a study name"
                raise ValueError(f"{entry!r}: {what}; an entry {WARM_ENTRY}")
            if not isinstance(entry.get("storage") or "", str):  # None: as stored
                raise ValueError(f"{entry!r}: storage is a URL string; an entry {WARM_ENTRY}")
        elif not isinstance(entry, str) or (entry != WARM_AUTO and not entry.endswith(".toml")):
            raise ValueError(f"{entry!r}: an entry {WARM_ENTRY}")
    if entries.count(WARM_AUTO) > 1:
        raise ValueError('lists "auto" twice')
    return entries


class SearchSection(Strict):
    """The search space. Each entry is fixed or searched (see docs/search_space.md)."""

    boundary: list[int] | int | Literal["all"] = "all"
    schedules: list[str] | str = Field(default_factory=lambda: ["static", "gradual", "lp_ft"])
    knobs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    head_lr: FloatRange = Field(default_factory=lambda: FloatRange(low=1e-4, high=3e-2, log=True))
    backbone_lr_ratio: FloatRange = Field(
        default_factory=lambda: FloatRange(low=0.01, high=1.0, log=True)
    )
    layer_decay: FloatRange = Field(default_factory=lambda: FloatRange(low=0.5, high=1.0))
    weight_decay: FloatRange = Field(default_factory=lambda: FloatRange(low=0.0, high=0.1))
    bn_mode: list[BnMode] | BnMode = "eval"
    init: list[Init] | Init = Field(default_factory=lambda: ["pretrained", "scratch"])
    augment: list[Augment] | Augment | None = None  # the policy as a dimension; see [training]
    # narrow schedule knobs and the head LR to what the training budget can use (with a note);
    # false searches the configured ranges exactly as written
    fit_to_budget: bool = True
    # the sampler's first trials vary only the boundary and the two LRs, the rest after them;
    # 0 searches every dimension from the first sampled trial (docs/search_space.md)
    core_trials: int = Field(default=10, ge=0)
    # earlier studies whose best plans this one runs first (docs/warm_start.md); None (not
    # an empty list) by default, as in the configs stored before these keys existed
    warm_start: list[str | WarmStudy] | None = None
    warm_plans: int | None = Field(default=None, ge=1, le=20)  # per earlier study (default 3)
    warm_from: list[str] | None = None  # more storages "auto" looks in, beside this study's

    @field_validator("warm_start", mode="before")
    @classmethod
    def _warm_start(cls, v: Any) -> Any:
        return None if v is None else _warm_entries(v)

    @field_validator("warm_from", mode="before")
    @classmethod
    def _warm_from(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("head_lr", "backbone_lr_ratio", mode="before")
    @classmethod
    def _log_range(cls, v: Any) -> Any:
        return _range(v, log=True)

    @field_validator("layer_decay", "weight_decay", mode="before")
    @classmethod
    def _lin_range(cls, v: Any) -> Any:
        return _range(v, log=False)

    @field_validator("schedules")
    @classmethod
    def _nonempty(cls, v: list[str] | str) -> list[str]:
        v = [v] if isinstance(v, str) else v
        if not v:
            raise ValueError('must list at least one schedule, e.g. ["static"]')
        if len(set(v)) != len(v):
            raise ValueError("lists a schedule twice")
        return v

    @field_validator("bn_mode", "init", "augment")
    @classmethod
    def _some_choice(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("list at least one choice")
        return v

    @field_validator("boundary")
    @classmethod
    def _boundary(cls, v: Any) -> Any:
        if isinstance(v, list):
            if len(v) != 2 or v[0] > v[1] or v[0] < 0:
                raise ValueError("a boundary range is [low, high] with 0 <= low <= high")
        elif isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("head_lr", "backbone_lr_ratio", "layer_decay", "weight_decay")
    @classmethod
    def _within_limits(cls, v: FloatRange, info: ValidationInfo) -> FloatRange:
        limits = LIMITS[str(info.field_name)]
        if v.low not in limits or v.high not in limits:
            raise ValueError(f"must be {limits}")
        return v

    def choices(self, name: str) -> list[str]:
        value = getattr(self, name)
        return list(value) if isinstance(value, list) else [value]
