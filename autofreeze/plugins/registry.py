"""Typed facade over the plugin hooks: the only module that calls ``pm.hook.*``.

Everything else asks a :class:`Registry` (usually :func:`get_registry`) for backbones,
datasets and schedules by name. Unknown names fail with the closest registered names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from autofreeze.errors import ConfigError, UnknownNameError
from autofreeze.hookspecs import (
    BackboneRegister,
    DatasetRegister,
    Entry,
    ScheduleRegister,
)
from autofreeze.plugins.manager import make_plugin_manager, validation_error

if TYPE_CHECKING:
    import click

    from autofreeze.core.backbones import Backbone
    from autofreeze.data.images import ImageDataset
    from autofreeze.schedules import Schedule


def _unknown(kind: str, name: str, known: Iterable[str], hint: str = "") -> UnknownNameError:
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += "; did you mean " + ", ".join(repr(c) for c in close) + "?"
    return UnknownNameError(msg + (f" ({hint})" if hint else ""))


@dataclass
class Registry:
    """What the loaded plugins register, collected on first use."""

    pm: pluggy.PluginManager = field(default_factory=make_plugin_manager)
    _collected: dict[str, Any] | None = None

    # -- collection -------------------------------------------------------------------------
    def _call(
        self, hook_name: str, register: BackboneRegister | DatasetRegister | ScheduleRegister
    ) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order (pluggy calls them LIFO)
            register.plugin = self.pm.get_name(impl.plugin) or impl.plugin_name
            impl.function(register)

    def _collect(self) -> dict[str, Any]:
        if self._collected is None:
            backbones: dict[str, Entry] = {}
            namespaces: list[Entry] = []
            datasets: dict[str, Entry] = {}
            schedules: dict[str, Entry] = {}
            self._call("register_backbones", BackboneRegister(backbones, namespaces))
            self._call("register_datasets", DatasetRegister(datasets))
            self._call("register_schedules", ScheduleRegister(schedules))
            self._collected = {
                "backbones": backbones,
                "namespaces": namespaces,
                "datasets": datasets,
                "schedules": schedules,
            }
        return self._collected

    def refresh(self) -> None:
        """Forget what was collected (after registering or unregistering a plugin)."""
        self._collected = None

    @contextmanager
    def plugin(self, plugin: object, name: str | None = None) -> Iterator[None]:
        """Register ``plugin`` for the duration of a ``with`` block (tests, notebooks)."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            error = validation_error(self.pm, exc, name)
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise error from None
        self.refresh()
        try:
            yield
        finally:
            if self.pm.is_registered(plugin):  # a blocked name was never registered
                self.pm.unregister(plugin)
            self.refresh()

    # -- backbones --------------------------------------------------------------------------
    def backbone_entries(self) -> dict[str, Entry]:
        return dict(self._collect()["backbones"])

    def backbone_namespaces(self) -> list[Entry]:
        return list(self._collect()["namespaces"])

    def list_backbones(self, pattern: str = "*") -> list[str]:
        """Exact names plus every name the namespaces list, filtered by a glob pattern."""
        import fnmatch

        names = set(self.backbone_entries())
        for ns in self.backbone_namespaces():
            names.update(ns.obj.names())
        return sorted(n for n in names if fnmatch.fnmatch(n, pattern))

    def backbone_plugin(self, name: str) -> str:
        """The plugin that provides backbone ``name``."""
        entry = self.backbone_entries().get(name)
        if entry is not None:
            return entry.plugin
        for ns in self.backbone_namespaces():
            if ns.obj.handles(name):
                return ns.plugin
        raise _unknown("backbone", name, self.list_backbones(), "see `autofreeze backbones`")

    def create_backbone(
        self,
        name: str,
        *,
        num_classes: int,
        weights: str | None = None,
        granularity: str = "block",
    ) -> Backbone:
        """Build backbone ``name`` with a fresh head of ``num_classes`` outputs."""
        if granularity not in ("block", "stage"):
            raise ConfigError(f"granularity must be 'block' or 'stage', not {granularity!r}")
        kwargs = {"num_classes": num_classes, "weights": weights, "granularity": granularity}
        entry = self.backbone_entries().get(name)
        if entry is not None:
            return entry.obj(name, **kwargs)
        for ns in self.backbone_namespaces():
            if ns.obj.handles(name):
                return ns.obj.create(name, **kwargs)
        raise _unknown("backbone", name, self.list_backbones(), "see `autofreeze backbones`")

    # -- datasets ---------------------------------------------------------------------------
    def dataset_entries(self) -> dict[str, Entry]:
        return dict(self._collect()["datasets"])

    def list_datasets(self) -> list[str]:
        return sorted(self.dataset_entries())

    def create_dataset(self, name: str, **options: Any) -> ImageDataset:
        """Build dataset ``name``; options are checked against the factory's signature and
        type hints (see :func:`autofreeze.data.options.validate_options`)."""
        entry = self.dataset_entries().get(name)
        if entry is None:
            raise _unknown("dataset", name, self.list_datasets())
        from autofreeze.data.options import validate_options

        return validate_options(entry.obj, f"dataset {name!r}")(**options)

    # -- schedules --------------------------------------------------------------------------
    def schedule_entries(self) -> dict[str, Entry]:
        return dict(self._collect()["schedules"])

    def list_schedules(self) -> list[str]:
        return sorted(self.schedule_entries())

    def get_schedule(self, name: str) -> type[Schedule]:
        entry = self.schedule_entries().get(name)
        if entry is None:
            raise _unknown("schedule", name, self.list_schedules())
        return entry.obj

    # -- commands and introspection --------------------------------------------------------
    def add_commands(self, cli: click.Group) -> None:
        self.pm.hook.register_commands(cli=cli)

    def plugins(self) -> list[dict[str, Any]]:
        """Each loaded plugin with its hooks and what it registers (for ``autofreeze plugins``)."""
        collected = self._collect()
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            dist = dict(self.pm.list_plugin_distinfo())
            info = dist.get(plugin)
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            rows.append(
                {
                    "name": name,
                    "package": f"{info.project_name} {info.version}" if info else "autofreeze",
                    "hooks": hooks,
                    "backbones": sorted(
                        [e.name for e in collected["backbones"].values() if e.plugin == name]
                        + [
                            f"{e.name} (namespace)"
                            for e in collected["namespaces"]
                            if e.plugin == name
                        ]
                    ),
                    "datasets": sorted(
                        e.name for e in collected["datasets"].values() if e.plugin == name
                    ),
                    "schedules": sorted(
                        e.name for e in collected["schedules"].values() if e.plugin == name
                    ),
                }
            )
        return rows


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry over the default plugin manager (built on first use)."""
    global _default
    if _default is None:
        _default = Registry()
    return _default
