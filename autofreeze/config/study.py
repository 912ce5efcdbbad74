"""The ``[study]`` table: name and storage, metric or objectives, budget (trials, time), sampler
and pruner, the first plans (baselines: the portfolio, the recipes), probe, re-evaluation and
the dashboard output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from autofreeze.config.base import Strict

METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
# costs a multi-objective study can minimise next to the metric, each a trial user attr
COSTS = {
    "train_seconds": "seconds",
    "trainable_params": "trainable_params",
    "peak_memory_mb": "peak_memory_mb",
}


UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds_of(value: Any) -> Any:
    """``90``, ``"90s"``, ``"20m"``, ``"1.5h"`` or ``"1h30m"`` -> seconds; anything else is left
    for pydantic to reject."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f'is a duration like "90s", "20m" or "1h30m", or seconds; not {value!r}')
    return sum(float(n) * UNITS[u] for n, u in parts)


# Optuna's artifact stores other than a folder: the URL scheme, the store's name in the docs
# and errors, the package it needs and autofreeze's extra that installs it
ARTIFACT_SCHEMES = {
    "s3": ("S3", "boto3", "s3"),
    "gs": ("Google Cloud Storage", "google-cloud-storage", "gcs"),
}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]")


@dataclass(frozen=True)
class ArtifactLocation:
    """Where a study's artifacts go: ``scheme`` ``""`` is a folder (``path``), ``"s3"`` or
    ``"gs"`` a bucket with an optional key prefix (no leading or trailing slash)."""

    scheme: str
    path: str = ""
    bucket: str = ""
    prefix: str = ""

    def __str__(self) -> str:
        if not self.scheme:
            return self.path
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


def artifact_location(text: str) -> ArtifactLocation:
    """``[study] artifacts`` (or ``AUTOFREEZE_ARTIFACTS``) read: a folder, or
    ``s3://BUCKET[/PREFIX]`` or ``gs://BUCKET[/PREFIX]``.

    Raises:
        ValueError: another scheme (``http://``, ``file://``...), or a bucket name that S3 and
            GCS would both refuse.
    """
    text = text.strip()
    if not text:
        raise ValueError("is a folder, s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]; not empty")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return ArtifactLocation("", path=text)
    if scheme not in ARTIFACT_SCHEMES:
        raise ValueError(
            f"is a folder, s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX] (Optuna's artifact "
            f"stores); not {text!r}"
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(
            f"names a bucket after {scheme}:// (3 to 222 lowercase letters, digits, dots, "
            f"dashes); not {text!r}"
        )
    return ArtifactLocation(scheme, bucket=bucket, prefix=prefix.strip("/"))


class StudySection(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    storage: str | None = None
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    n_trials: int | None = Field(default=20, ge=1)
    timeout: float | None = Field(default=None, gt=0)  # seconds of this process's trial loop
    # the study's compute in seconds, all workers together ("20m", "1h" or seconds): the
    # probe, every trial and the re-evaluation live inside it (see study/allowance.py)
    budget: float | None = Field(default=None, ge=10)
    sampler: Literal["tpe", "random", "cmaes", "qmc", "gp"] = "tpe"
    pruner: Literal["percentile", "median", "hyperband", "none"] = "percentile"
    # calibrated on full learning curves (docs/benchmarks.md, "Pruning calibration"): no trial
    # is judged before this share of the epochs; then a searched trial goes on only while its
    # best value is within the top prune_percentile % of the completed trials at that epoch
    prune_after: float = Field(default=0.65, gt=0, lt=1)
    prune_percentile: float = Field(default=25.0, gt=0, lt=100)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    # the reference plans that open a study (false: none, only the probe's): which ones is
    # first_plans, the shipped portfolio (autofreeze/portfolio.json), the textbook recipes or
    # both; unset, both, or the portfolio alone behind a [search] warm_start's plans (what
    # measured best at equal wall time: docs/benchmarks.md, "Warm start with the portfolio,
    # side by side"); StudyConfig.first_plans resolves it
    baselines: bool = True
    first_plans: Literal["portfolio", "recipes", "both"] | None = None
    heartbeat: int = Field(default=20, ge=1)
    probe: bool = True  # per-block transferability probe before the first trial
    reevaluate: int = Field(default=3, ge=0)  # top plans re-run before one is named best
    reevaluate_seeds: int = Field(default=2, ge=0)  # extra seeds per re-run plan
    # a multi-objective study: the metric, then costs to minimise (the Pareto front is kept)
    objectives: list[str] | None = None
    dashboard: bool = True  # notes, figures and artifacts for optuna-dashboard and the report
    # where trial figures and the report go (Optuna's artifact store): a folder (default
    # <name>-artifacts beside the config), s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]
    artifacts: str | None = None

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return seconds_of(v)

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, v: str | None) -> str | None:
        if v is not None:
            artifact_location(v)  # a bad URL fails here, before any study
        return v

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
    def _budget_alone(self) -> StudySection:
        """A time budget with no trial count given is the only limit (the default count of
        20 trials would cut a long budget short without a word)."""
        if self.budget is not None and "n_trials" not in self.model_fields_set:
            self.n_trials = None
        return self

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
