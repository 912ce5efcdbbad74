"""The ``autofreeze`` click group and what its commands share: one-line errors, JSON, tables,
``key=value`` options, ``--quiet``/``--verbose`` and the stderr display they choose."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from autofreeze.errors import AutofreezeError

RELAY = "autofreeze.relay"  # ctx.meta: the command is a worker of `autofreeze search`
TRIAL_COMMANDS = ("search", "worker")  # stopped, these re-queue the trial they were running


class AutofreezeGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        from autofreeze.search.signals import on_stop, stopped

        try:
            with on_stop():  # SIGTERM stops a command as Ctrl-C does
                return super().invoke(ctx)
        except AutofreezeError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # a storage proxy that stopped answering: one line
            from autofreeze.study.proxy import rpc_failure

            reason = rpc_failure(exc)
            if reason is None:
                raise
            raise click.ClickException(
                f"the storage proxy stopped answering ({reason}); check that `autofreeze proxy` "
                "still runs, then run the same command again"
            ) from None
        except KeyboardInterrupt as exc:
            stop = stopped(exc)
            # a search's worker leaves it to the search, which says it once
            with on_stop(ignore):  # stopping already: another signal changes nothing
                if ctx.meta.get(RELAY):
                    pass
                elif ctx.invoked_subcommand in TRIAL_COMMANDS:
                    click.echo(
                        f"{stop.words}: finished trials are kept and an interrupted trial is "
                        "re-queued; run the same command to resume",
                        err=True,
                    )
                else:
                    click.echo(stop.words, err=True)
            raise click.exceptions.Exit(stop.exit_code) from None


def ignore(signum: int, frame: Any) -> None:
    """A signal handler that does nothing."""


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], **options: Any) -> str:
    from autofreeze.review.tables import format_table as table

    return table(rows, columns, **options)


@click.group(cls=AutofreezeGroup)
@click.version_option(package_name="autofreeze")
def cli() -> None:
    """Search how to fine-tune a pretrained image backbone: which blocks to freeze, how to
    unfreeze them, and which learning rate each group gets."""
    import warnings

    # optuna flags some features it uses as experimental; users cannot act on that
    warnings.filterwarnings("ignore", message=".*experimental.*")


def parse_assignments(pairs: Sequence[str], what: str) -> dict[str, Any]:
    """``key=value`` pairs; values are read as TOML (numbers, lists, quoted strings) or text."""
    import tomllib

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{what} must look like key=value, not {pair!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


verbosity_options = [
    click.option("-q", "--quiet", is_flag=True, help="errors and the final result only"),
    click.option("-v", "--verbose", is_flag=True, help="a line per epoch and per trial too"),
]


def with_verbosity(f: Any) -> Any:
    for option in reversed(verbosity_options):
        f = option(f)
    return f


def make_display(quiet: bool, verbose: bool, relay: bool = False) -> Any:
    """The stderr display of a search or a worker (see autofreeze/review/terminal.py)."""
    from autofreeze.review.terminal import Display, level

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    click.get_current_context().meta[RELAY] = relay
    return Display(level(quiet, verbose), relay=relay)
