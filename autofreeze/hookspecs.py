"""The whole extension surface of autofreeze: four hooks, the register objects they receive and
the protocols of what plugins register.

A plugin is any module or object with functions decorated by :data:`hookimpl` whose names match
the hooks below. Built-in backbones, datasets and schedules are registered through these same
hooks (see ``autofreeze/default_plugins``). Third-party packages expose a plugin through the
entry-point group ``autofreeze``::

    [project.entry-points.autofreeze]
    my_backbones = "my_package.plugin"

A plugin imports from this module only: the types it receives are defined here, and what it
builds and returns (``Backbone``, ``ImageDataset``, ``Schedule``, ...), the weight-file helpers
and the errors it raises are re-exported here (loaded on first use, so registering a plugin
never imports torch). See :data:`PLUGIN_API`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from autofreeze.errors import PluginError

if TYPE_CHECKING:
    import click

    from autofreeze.core.backbones import Backbone
    from autofreeze.data.images import ImageDataset
    from autofreeze.schedules import Schedule

hookspec = pluggy.HookspecMarker("autofreeze")
hookimpl = pluggy.HookimplMarker("autofreeze")

# name -> module: what plugins build, return, raise and read weights with
PLUGIN_API = {
    **dict.fromkeys(("Backbone", "Block"), "autofreeze.core.backbones"),
    **dict.fromkeys(("ImageDataset", "ImageSet", "stratified_split"), "autofreeze.data.images"),
    **dict.fromkeys(
        ("Count", "Seed", "ValFraction", "validate_options"), "autofreeze.data.options"
    ),
    **dict.fromkeys(("Schedule", "Knob", "Phase"), "autofreeze.schedules"),
    **dict.fromkeys(
        ("read_state_dict", "load_state_dict", "save_state", "first_line", "reachable"),
        "autofreeze.core.weights",
    ),
    **dict.fromkeys(
        (
            "AutofreezeError",
            "BackboneError",
            "ConfigError",
            "DatasetError",
            "PlanError",
            "UnknownNameError",
            "WeightsError",
        ),
        "autofreeze.errors",
    ),
}


def __getattr__(name: str) -> Any:
    if name in PLUGIN_API:
        import importlib

        return getattr(importlib.import_module(PLUGIN_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- what plugins register -----------------------------------------------------------------------
class BackboneFactory(Protocol):
    """Builds backbone ``name`` with a fresh head of ``num_classes`` outputs.

    ``weights`` is ``"none"`` (random), ``"default"`` (the model's own pretrained weights) or a
    local file path; ``granularity`` is ``"block"`` (fine) or ``"stage"`` (coarse).
    """

    def __call__(
        self, name: str, *, num_classes: int, weights: str | None, granularity: str
    ) -> Backbone: ...


class BackboneNamespace(Protocol):
    """An open-ended family of backbone names (for example every timm model)."""

    label: str

    def names(self) -> Iterable[str]: ...

    def handles(self, name: str) -> bool: ...

    def create(
        self, name: str, *, num_classes: int, weights: str | None, granularity: str
    ) -> Backbone: ...


DatasetFactory = Callable[..., "ImageDataset"]
"""``factory(**options) -> ImageDataset``; the options are the config's ``[dataset]`` table.

The host validates the options against the factory's signature and type hints (pydantic) before
calling it, so a wrong key or a value of the wrong type fails with a line naming the option.
"""


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, the object, the plugin that registered it."""

    name: str
    obj: Any
    plugin: str
    description: str = ""


class _Register:
    kind = "thing"

    def __init__(self, entries: dict[str, Entry]) -> None:
        self._entries = entries
        self.plugin = "?"  # set by the registry before each plugin's hook runs

    def _add(self, name: str, obj: Any, description: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self.plugin!r} registered a {self.kind} without a name")
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {other!r} and by plugin "
                f"{self.plugin!r}; rename one or disable a plugin with AUTOFREEZE_DISABLE_PLUGINS"
            )
        self._entries[name] = Entry(name, obj, self.plugin, description)


class BackboneRegister(_Register):
    """Passed to ``register_backbones``: ``register(name, factory)`` or ``.namespace(ns)``."""

    kind = "backbone"

    def __init__(self, entries: dict[str, Entry], namespaces: list[Entry]) -> None:
        super().__init__(entries)
        self._namespaces = namespaces

    def __call__(self, name: str, factory: BackboneFactory, description: str = "") -> None:
        self._add(name, factory, description)

    def namespace(self, namespace: BackboneNamespace, description: str = "") -> None:
        self._namespaces.append(Entry(namespace.label, namespace, self.plugin, description))


class DatasetRegister(_Register):
    """Passed to ``register_datasets``: ``register(name, factory, description="")``."""

    kind = "dataset"

    def __call__(self, name: str, factory: DatasetFactory, description: str = "") -> None:
        self._add(name, factory, description)


class ScheduleRegister(_Register):
    """Passed to ``register_schedules``: ``register(schedule_class)``."""

    kind = "schedule"

    def __call__(self, schedule: type[Schedule]) -> None:
        self._add(getattr(schedule, "name", ""), schedule, getattr(schedule, "description", ""))


# -- the hooks -----------------------------------------------------------------------------------
@hookspec
def register_backbones(register: BackboneRegister) -> None:
    """Register backbone factories.

    Call ``register(name, factory, description="")`` once per backbone name (a
    :class:`BackboneFactory`). For an open-ended family of names (all of timm, ``hf-hub:``
    names) call ``register.namespace(namespace)`` with a :class:`BackboneNamespace`.
    """


@hookspec
def register_datasets(register: DatasetRegister) -> None:
    """Register dataset factories.

    Call ``register(name, factory, description="")`` where ``factory(**options) ->
    autofreeze.data.images.ImageDataset``. The options are the study config's ``[dataset]`` table
    without ``name``; the host checks them against the factory's signature before calling it.
    """


@hookspec
def register_schedules(register: ScheduleRegister) -> None:
    """Register unfreezing schedules.

    Call ``register(schedule_class)`` with a subclass of ``autofreeze.schedules.Schedule``. It
    declares ``name``, ``description`` and ``knobs`` (its own hyperparameters and their ranges).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``autofreeze`` click group, e.g. ``@cli.command()``."""
