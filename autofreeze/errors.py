"""Errors a user can cause. The CLI turns each into one line and exit code 1."""

from __future__ import annotations


class AutofreezeError(Exception):
    """Base of every error caused by input (config, names, files, storage), not by a bug."""


class ConfigError(AutofreezeError):
    """A study config or a CLI value is invalid."""


class PluginError(AutofreezeError):
    """A plugin registered something invalid (for example a duplicate name)."""


class UnknownNameError(AutofreezeError):
    """A backbone, dataset or schedule name that no plugin registers."""


class BackboneError(AutofreezeError):
    """A backbone cannot be built or cut into blocks."""


class WeightsError(BackboneError):
    """A weights file is missing, unreadable, or does not match the backbone."""


class DatasetError(AutofreezeError):
    """Data is missing, empty, corrupt or inconsistent."""


class PlanError(AutofreezeError):
    """A freeze plan is out of range for its backbone."""


class StorageError(AutofreezeError):
    """The study database cannot be reached or opened."""


class WorkerError(AutofreezeError):
    """A worker process of a search ended with an error."""
