"""A whole study config: TOML files validated with pydantic; every error names the file and the key.

Numeric search knobs are written as a fixed value (``head_lr = 1e-3``) or a ``[low, high]``
range; categorical ones as a fixed value or a list of choices (``space.py`` turns each into one
dimension of the search). Relative paths (weights, data, the default SQLite file) are resolved
against the config file's folder. Every override (CLI flags, ``AUTOFREEZE_STORAGE``) is applied
once, by :func:`load_config` or :func:`parse_config`; nothing reads the environment later.
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from autofreeze.config.backbone import BackboneSection
from autofreeze.config.base import Strict, format_validation_error
from autofreeze.config.search import SearchSection
from autofreeze.config.study import ArtifactLocation, StudySection, artifact_location
from autofreeze.config.training import TrainConfig
from autofreeze.errors import ConfigError


class StudyConfig(Strict):
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
    def artifacts(self) -> ArtifactLocation:
        """Where the study's figures and report live (Optuna's artifact store, which every
        worker must reach): a folder resolved against the config's, or a bucket URL."""
        where = artifact_location(self.study.artifacts or f"{self.study.name}-artifacts")
        return replace(where, path=self.resolve(where.path)) if not where.scheme else where

    @property
    def artifact_dir(self) -> Path:
        """The artifact folder (a bucket URL as given, for messages only)."""
        return Path(str(self.artifacts))

    @property
    def first_plans(self) -> str:
        """``[study] first_plans`` as given, else the default: ``"both"`` (the portfolio and the
        textbook recipes), or ``"portfolio"`` when ``[search] warm_start`` names earlier studies
        (their plans, then the portfolio's). At equal wall time each did better than the
        recipes alone (docs/benchmarks.md, "Warm start with the portfolio, side by side")."""
        if self.study.first_plans is not None:
            return self.study.first_plans
        return "portfolio" if self.search.warm_start else "both"

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


STORAGE_ENV = "AUTOFREEZE_STORAGE"
ARTIFACTS_ENV = "AUTOFREEZE_ARTIFACTS"  # [study] artifacts, as mounted on this machine


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` with dotted keys set (``{"training.epochs": 3}``); ``None`` values are skipped.

    ``study.storage`` falls back to ``AUTOFREEZE_STORAGE`` and ``study.artifacts`` to
    ``AUTOFREEZE_ARTIFACTS``: a flag beats the environment, the environment beats the file
    (and the config a study stored, which a worker runs).
    """
    overrides = dict(overrides or {})
    for key, env in (("study.storage", STORAGE_ENV), ("study.artifacts", ARTIFACTS_ENV)):
        if overrides.get(key) is None and os.environ.get(env):
            overrides[key] = os.environ[env]
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
