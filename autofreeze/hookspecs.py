"""The whole extension surface of autofreeze: four hooks, each receiving a ``register`` object.

A plugin is any module or object with functions decorated by :data:`hookimpl` whose names match
the hooks below. Built-in backbones, datasets and schedules are registered through these same
hooks (see ``autofreeze/default_plugins``). Third-party packages expose a plugin through the
entry-point group ``autofreeze``::

    [project.entry-points.autofreeze]
    my_backbones = "my_package.plugin"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from autofreeze.registry import BackboneRegister, DatasetRegister, ScheduleRegister

hookspec = pluggy.HookspecMarker("autofreeze")
hookimpl = pluggy.HookimplMarker("autofreeze")


@hookspec
def register_backbones(register: BackboneRegister) -> None:
    """Register backbone factories.

    Call ``register(name, factory, description="")`` once per backbone name, where
    ``factory(name, *, num_classes, weights, granularity) -> autofreeze.backbones.Backbone``.
    For an open-ended family of names (all of timm, ``hf-hub:`` names) call
    ``register.namespace(namespace)`` with an object that has ``label: str``,
    ``names() -> Iterable[str]``, ``handles(name) -> bool`` and the same ``create`` signature
    as a factory.
    """


@hookspec
def register_datasets(register: DatasetRegister) -> None:
    """Register dataset factories.

    Call ``register(name, factory, description="")`` where ``factory(**options) ->
    autofreeze.data.ImageDataset``. The options are the study config's ``[dataset]`` table
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
