"""The ``autofreeze`` command line: a thin click group; each command calls one library function.

Commands live in ``_catalog.py`` (what the plugins register: backbones, datasets, plugins) and
``_studies.py`` (search, worker, train, pretrain, dashboard, probe), ``_results.py`` (best,
trials, studies), ``_model.py`` (evaluate, predict) and ``_report.py`` (report).

Data go to stdout (``--json`` for machines), progress and chatter to stderr. Errors a user can
cause (:class:`autofreeze.errors.AutofreezeError`) become one line and exit code 1; bad usage
exits 2. Heavy imports (torch, timm, optuna) happen inside the commands so that
``autofreeze --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

# the commands register themselves on `cli` when their modules are imported
from autofreeze.cli import _catalog, _model, _report, _results, _studies  # noqa: F401
from autofreeze.cli._group import cli
from autofreeze.errors import AutofreezeError

__all__ = ["cli", "main"]


def _load_plugin_commands() -> None:
    from autofreeze.plugins.registry import get_registry

    try:
        get_registry().add_commands(cli)
    except AutofreezeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


def main() -> None:
    _load_plugin_commands()
    cli()
