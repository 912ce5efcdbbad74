"""Study configs: TOML files validated with pydantic; every error names the file and the key.

Numeric search knobs are written as a fixed value (``head_lr = 1e-3``) or a ``[low, high]``
range; categorical ones as a fixed value or a list of choices (``space.py`` turns each into one
dimension of the search). Relative paths (weights, data, the default SQLite file) are resolved
against the config file's folder. Every override (CLI flags, ``AUTOFREEZE_STORAGE``) is applied
once, by :func:`load_config` or :func:`parse_config`; nothing reads the environment later.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autofreeze.config_search import SearchSection, _Strict
from autofreeze.errors import ConfigError
from autofreeze.plan import Augment

METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
# costs a multi-objective study can minimise next to the metric, each a trial user attr
COSTS = {
    "train_seconds": "seconds",
    "trainable_params": "trainable_params",
    "peak_memory_mb": "peak_memory_mb",
}


class StudySection(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    storage: str | None = None
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    n_trials: int | None = Field(default=20, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    sampler: Literal["tpe", "random", "cmaes", "qmc", "gp"] = "tpe"
    pruner: Literal["percentile", "median", "hyperband", "none"] = "percentile"
    # calibrated on full learning curves (docs/benchmarks.md, "Pruning calibration"): no trial
    # is judged before this share of the epochs; then a searched trial goes on only while its
    # best value is within the top prune_percentile % of the completed trials at that epoch
    prune_after: float = Field(default=0.65, gt=0, lt=1)
    prune_percentile: float = Field(default=25.0, gt=0, lt=100)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    baselines: bool = True
    heartbeat: int = Field(default=20, ge=1)
    probe: bool = True  # per-block transferability probe before the first trial
    reevaluate: int = Field(default=3, ge=0)  # top plans re-run before one is named best
    reevaluate_seeds: int = Field(default=2, ge=0)  # extra seeds per re-run plan
    # a multi-objective study: the metric, then costs to minimise (the Pareto front is kept)
    objectives: list[str] | None = None
    dashboard: bool = True  # notes, figures and artifacts for optuna-dashboard and the report
    artifacts: str | None = None  # the artifact folder (default: <name>-artifacts beside it)

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not 2 <= len(v) <= 3 or v[0] not in METRICS or len(set(v)) != len(v):
            raise ValueError(
                f"is a metric ({' or '.join(METRICS)}) then one or two costs, each once, "
                f'e.g. ["val_accuracy", "train_seconds"]; not {v}'
            )
        unknown = [c for c in v[1:] if c not in COSTS]
        if unknown:
            raise ValueError(f"unknown cost {unknown[0]!r} (costs: {', '.join(COSTS)})")
        return v

    @model_validator(mode="after")
    def _metric_first(self) -> StudySection:
        if self.objectives and self.objectives[0] != self.metric:
            self.metric = self.objectives[0]  # type: ignore[assignment]
        return self

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    @property
    def directions(self) -> list[str]:
        """One per objective: the metric's, then minimize for every cost."""
        return [self.direction] + ["minimize"] * len((self.objectives or [])[1:])


class PretrainSection(_Strict):
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


class BackboneSection(_Strict):
    name: str = Field(min_length=1)
    weights: str = "none"
    granularity: Literal["block", "stage"] = "block"
    pretrain: PretrainSection | None = None


class TrainConfig(_Strict):
    """How to train one plan: the study config's ``[training]`` table, and what
    :func:`autofreeze.train.fit` takes.

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


class StudyConfig(_Strict):
    study: StudySection
    backbone: BackboneSection
    dataset: dict[str, Any]
    training: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchSection = Field(default_factory=SearchSection)
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(v.get("name"), str):
            raise ValueError("needs a 'name' (see `autofreeze datasets`)")
        return v

    @model_validator(mode="after")
    def _views(self) -> StudyConfig:
        policies = self.search.choices("augment") if self.search.augment is not None else []
        if self.training.cached_views and set(policies or [self.training.augment]) == {"none"}:
            raise ValueError(
                "[training] cached_views caches augmented views of each image, but no plan is "
                'augmented: set [training] augment (e.g. "crop") or [search] augment too, or '
                "remove cached_views"
            )
        return self

    # -- derived ----------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def resolve(self, path: str) -> str:
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else self.base_dir / p)

    @property
    def storage_url(self) -> str:
        """The study's storage; the default is SQLite beside the config file."""
        if self.study.storage:
            return self.study.storage
        return f"sqlite:///{self.resolve(self.study.name + '.db')}"

    @property
    def artifact_dir(self) -> Path:
        """Where the study's figures live (Optuna's artifact store; share it across machines)."""
        return Path(self.resolve(self.study.artifacts or f"{self.study.name}-artifacts"))

    def weights_path(self) -> str:
        w = self.backbone.weights
        return w if w in ("none", "default") else self.resolve(w)

    def dataset_options(self, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """A dataset table's options (``[dataset]`` by default), paths resolved."""
        options = {k: v for k, v in (spec or self.dataset).items() if k != "name"}
        for key in ("path", "root"):
            if isinstance(options.get(key), str):
                options[key] = self.resolve(options[key])
        return options

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "union["))]
    # pydantic repeats the field for union members (e.g. 'list[...]'); keep the user's keys
    loc = [p for p in loc if "[" not in p and not p.startswith("literal")]
    key = ".".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/config.md)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {key}: {msg}{more}"


STORAGE_ENV = "AUTOFREEZE_STORAGE"


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` with dotted keys set (``{"training.epochs": 3}``); ``None`` values are skipped.

    ``study.storage`` falls back to ``AUTOFREEZE_STORAGE``: a flag beats the environment, the
    environment beats the file.
    """
    overrides = dict(overrides or {})
    if overrides.get("study.storage") is None and os.environ.get(STORAGE_ENV):
        overrides["study.storage"] = os.environ[STORAGE_ENV]
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def parse_config(
    data: dict[str, Any],
    where: str = "config",
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> StudyConfig:
    """Validate a config table (a TOML file's, or the one stored with a study)."""
    data = apply_overrides(copy.deepcopy(data), overrides)
    try:
        return StudyConfig.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study TOML; ``overrides`` maps dotted keys to values (CLI flags)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config {str(path)!r} not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(data, str(path), path.resolve(), overrides)
