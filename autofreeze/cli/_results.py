"""Commands that read a study's results: best, trials; and studies, what a storage holds."""

from __future__ import annotations

import click

from autofreeze.cli._group import cli, echo_json, format_table
from autofreeze.cli._studies import _load_study, with_study_options

STATES = ("complete", "pruned", "fail", "running", "waiting")  # tables.STATES (import-light)


@cli.command()
@with_study_options
def best(config: str | None, storage: str | None, study_name: str | None, as_json: bool) -> None:
    """The best trial of a study: its metric and freeze plan."""
    from autofreeze.review.summary import best_summary

    summary = best_summary(_load_study(config, storage, study_name))
    if as_json:
        echo_json(summary)
        return
    b = summary["best"]
    if b is None:
        raise click.ClickException(f"study {summary['study']!r} has no finished trial yet")
    if "pareto_front" in summary:
        _front(summary)
        return
    click.echo(f"best trial {b['number']} ({b['name']}): value {b['value']:.4f}")
    again = b.get("reevaluation")
    if again and len(again["values"]) == 1:
        click.echo("  a single run: the budget left no room to re-run the top plans")
    elif again:
        ci = f" ± {again['ci95']:.4f} (95 %)" if again["ci95"] is not None else ""
        runs = ", ".join(f"{v:.4f}" for v in again["values"])
        click.echo(f"  mean over {len(again['values'])} seeds: {again['mean']:.4f}{ci} [{runs}]")
    for key, value in (b["plan"] or {}).items():
        if value is not None:  # e.g. augment, when the study does not search it
            click.echo(f"  {key}: {value}")
    click.echo(f"  frozen blocks: {', '.join(b['frozen_blocks'] or []) or '(none)'}")


def _front(summary: dict) -> None:
    """A multi-objective study's result: every plan of its Pareto front, best metric first."""
    from autofreeze.review.tables import LABELS, WIDTH

    names = summary["objectives"]
    n = len(summary["pareto_front"])
    click.echo(
        f"Pareto front: {n} plan{'s' if n != 1 else ''} no other beats on {' and '.join(names)}"
    )
    rows = [{**r, **dict(zip(names, r["values"], strict=True))} for r in summary["pareto_front"]]
    columns = ["number", "name", *names, "plan"]
    click.echo(format_table(rows, columns, width=WIDTH, labels=LABELS))
    click.echo("train any of them: autofreeze train CONFIG --trial N --out model.safetensors")


@cli.command()
@with_study_options
@click.option(
    "--sort",
    "sort_by",
    metavar="COLUMN",
    help="order by a column: value (best first for the study's direction), number, seconds, "
    "boundary, ... (others ascending; rows without a value last)",
)
@click.option("--reverse", is_flag=True, help="the other way round")
@click.option("--top", type=click.IntRange(min=1), help="only the first N rows")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES, case_sensitive=False),
    help="only trials in this state (repeatable)",
)
@click.option("--wide", is_flag=True, help="every column (the default table fits 100 columns)")
def trials(
    config: str | None,
    storage: str | None,
    study_name: str | None,
    as_json: bool,
    sort_by: str | None,
    reverse: bool,
    top: int | None,
    states: tuple[str, ...],
    wide: bool,
) -> None:
    """One row per trial: state, metric, plan, epochs, time (--wide: every plan field, the
    cost and the reason a trial failed)."""
    from autofreeze.review.summary import TRIAL_COLUMNS, trial_rows
    from autofreeze.review.tables import LABELS, TRIAL_SHORT, WIDTH, select_rows
    from autofreeze.study import records

    study = _load_study(config, storage, study_name)
    rows = trial_rows(study)
    if sort_by is not None and rows and sort_by not in rows[0]:
        raise click.UsageError(
            f"--sort {sort_by!r} is not a column; one of: {', '.join(TRIAL_COLUMNS)}, plan"
        )
    rows = select_rows(
        rows,
        sort=sort_by,
        maximize=records.maximizes(study),
        reverse=reverse,
        top=top,
        states=states,
    )
    if as_json:
        echo_json(rows)
    elif wide:
        click.echo(format_table(rows, TRIAL_COLUMNS))
    else:
        click.echo(format_table(rows, TRIAL_SHORT, width=WIDTH, labels=LABELS))


@cli.command()
@click.argument("storage", required=False)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="take the storage of this study config (as `search` would use it)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--wide", is_flag=True, help="the task and the plan in full words (the default fits 100)"
)
def studies(storage: str | None, config: str | None, as_json: bool, wide: bool) -> None:
    """The studies a storage holds, one row each: task, backbone, metric, trials counted,
    best plan and its value (the re-evaluated mean where its plan was re-run). STORAGE is an
    Optuna storage URL (default: AUTOFREEZE_STORAGE, or --config's storage); a study there
    can warm-start a new one ([search] warm_start)."""
    import os

    from autofreeze.config import STORAGE_ENV
    from autofreeze.review.summary import STUDY_COLUMNS, STUDY_SHORT, short_study_row, study_row
    from autofreeze.review.tables import WIDTH
    from autofreeze.study.library import read_storage
    from autofreeze.study.storage import mask_url

    if storage and config:
        raise click.UsageError("give a STORAGE URL or --config, not both")
    if config:
        from autofreeze.cli._studies import _config

        storage = _config(config).storage_url
    storage = storage or os.environ.get(STORAGE_ENV)
    if not storage:
        raise click.UsageError(f"give a STORAGE URL, --config CONFIG, or set {STORAGE_ENV}")
    rows = [study_row(s) for s in read_storage(storage)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no studies in {mask_url(storage)}", err=True)
        return
    if wide:
        click.echo(format_table(rows, STUDY_COLUMNS))
    else:
        click.echo(format_table([short_study_row(r) for r in rows], STUDY_SHORT, width=WIDTH))
