"""The study config: one module per TOML table (:mod:`.study`, :mod:`.backbone`,
:mod:`.training`, :mod:`.search`), the whole file and its overrides in :mod:`.load`.

Every override (CLI flags, ``AUTOFREEZE_STORAGE``, ``AUTOFREEZE_ARTIFACTS``) is applied once,
by :func:`load_config` or :func:`parse_config`; nothing reads the environment later.
"""

from __future__ import annotations

from autofreeze.config.backbone import BackboneSection, PretrainSection
from autofreeze.config.base import Strict, format_validation_error
from autofreeze.config.load import (
    ARTIFACTS_ENV,
    STORAGE_ENV,
    StudyConfig,
    apply_overrides,
    load_config,
    parse_config,
)
from autofreeze.config.search import FloatRange, SearchSection
from autofreeze.config.study import (
    ARTIFACT_SCHEMES,
    COSTS,
    METRICS,
    ArtifactLocation,
    StudySection,
    artifact_location,
)
from autofreeze.config.training import TrainConfig

__all__ = [
    "ARTIFACTS_ENV",
    "ARTIFACT_SCHEMES",
    "COSTS",
    "METRICS",
    "STORAGE_ENV",
    "ArtifactLocation",
    "BackboneSection",
    "FloatRange",
    "PretrainSection",
    "SearchSection",
    "Strict",
    "StudyConfig",
    "StudySection",
    "TrainConfig",
    "apply_overrides",
    "artifact_location",
    "format_validation_error",
    "load_config",
    "parse_config",
]
