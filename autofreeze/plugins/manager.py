"""Plugin manager factory: hookspecs, built-ins, then entry points of the group ``autofreeze``."""

from __future__ import annotations

import importlib
import os

import pluggy

from autofreeze import hookspecs
from autofreeze.errors import PluginError

ENTRY_POINT_GROUP = "autofreeze"
DISABLE_ENV = "AUTOFREEZE_DISABLE_PLUGINS"

DEFAULT_PLUGINS = (
    "autofreeze.plugins.builtin.timm_backbones",
    "autofreeze.plugins.builtin.datasets",
    "autofreeze.plugins.builtin.schedules",
)


def blocked_plugins() -> set[str]:
    """Names in ``AUTOFREEZE_DISABLE_PLUGINS`` (comma separated): entry points not to load."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager: add the hookspecs, register built-ins, load entry points.

    Built-ins are registered under their module names; ``AUTOFREEZE_DISABLE_PLUGINS`` can block
    any plugin, built-in or third-party, by its registered name. A plugin with a misspelled hook
    or a wrong hook argument raises :class:`PluginError` (one line naming it), not a traceback.
    """
    pm = pluggy.PluginManager("autofreeze")
    pm.add_hookspecs(hookspecs)
    blocked = blocked_plugins()
    for name in blocked:
        pm.set_blocked(name)
    try:
        for module_name in DEFAULT_PLUGINS:
            if module_name not in blocked:
                pm.register(importlib.import_module(module_name), name=module_name)
        if load_entry_points:
            load_entry_points_of(pm)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise validation_error(pm, exc) from None
    return pm


def load_entry_points_of(pm: pluggy.PluginManager) -> None:
    """Register every installed plugin of the group (pluggy's loader), with a plugin that
    cannot be imported reported as one line naming it, not as its import's traceback."""
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except pluggy.PluginValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a third party's import
        raise import_error(pm, exc) from None


def import_error(pm: pluggy.PluginManager, exc: Exception) -> PluginError:
    """The plugin whose import failed: the first entry point pluggy did not get to register
    that still fails to load (those before it are registered)."""
    from importlib.metadata import entry_points

    name, value = "?", "?"
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is None and not pm.is_blocked(ep.name):
            try:
                ep.load()
            except Exception as again:  # noqa: BLE001
                name, value, exc = ep.name, ep.value, again
                break
    lines = str(exc).strip().splitlines()
    return PluginError(
        f"plugin {name!r} ({value}) cannot be imported: {type(exc).__name__}: "
        f"{lines[0] if lines else ''}; reinstall or fix it, or block it with {DISABLE_ENV}={name}"
    )


def validation_error(
    pm: pluggy.PluginManager, exc: pluggy.PluginValidationError, name: str | None = None
) -> PluginError:
    """One line naming the plugin at fault (a misspelled hook, a wrong argument name)."""
    plugin = exc.plugin
    name = name or pm.get_name(plugin) or getattr(plugin, "__name__", None)
    name = name or type(plugin).__name__
    detail = str(exc).replace(f" in plugin {plugin!r}", "")
    detail = "; ".join(line.strip() for line in detail.splitlines() if line.strip())
    hooks = ", ".join(
        sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "autofreeze_spec"))
    )
    return PluginError(
        f"plugin {name!r} is invalid: {detail} (hooks: {hooks}); fix it or block it with "
        f"{DISABLE_ENV}={name}"
    )
