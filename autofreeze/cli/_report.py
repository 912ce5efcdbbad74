"""The commands a reviewer runs: ``report`` (a study as one self-contained HTML page, or as
Markdown) and ``dashboard`` (optuna-dashboard on the study, with its figures)."""

from __future__ import annotations

from pathlib import Path

import click

from autofreeze.cli._group import cli, echo_json
from autofreeze.cli._studies import _config, _load_study, with_study_options


@cli.command()
@with_study_options
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="the file to write (its folder is created)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md"]),
    help="html: one page with its figures that opens offline; md: the facts as Markdown "
    "(default: md for a .md file, else html)",
)
def report(
    config: str | None,
    storage: str | None,
    study_name: str | None,
    as_json: bool,
    out: str,
    fmt: str | None,
) -> None:
    """Write a study's report: the best plan and its freeze map against the textbook recipes,
    the metric by boundary and cost, parameter importance, the search history and the best
    trials' learning curves."""
    from autofreeze.review.report import render_report
    from autofreeze.study.records import metric_of

    study = _load_study(config, storage, study_name)
    metric = metric_of(study) or (_config(config).study.metric if config else "value")
    path = Path(out)
    fmt = fmt or ("md" if path.suffix.lower() in (".md", ".markdown") else "html")
    rendered = render_report(study, metric, fmt)
    try:
        written = rendered.write(path)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the report to {path}: {exc.strerror or exc}"
        ) from None
    if as_json:
        echo_json(
            {"path": str(written), "bytes": written.stat().st_size, "sections": rendered.sections}
        )
    else:
        click.echo(str(written))


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--storage", envvar="AUTOFREEZE_STORAGE", help="Optuna storage URL")
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False),
    help="the studies' figure folder ([study] artifacts; default: the config's)",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(
    config: str | None, storage: str | None, artifacts: str | None, host: str, port: int
) -> None:
    """Serve optuna-dashboard on the study's storage: notes, figures and the report. With a
    CONFIG, its study must be in the storage (else: which studies are)."""
    from optuna.artifacts import FileSystemArtifactStore

    from autofreeze.review.dashboard import serve
    from autofreeze.study.storage import load_existing_study, mask_url, open_storage

    if not (config or storage):
        raise click.UsageError("give a CONFIG or --storage URL")
    cfg = _config(config, **{"study.storage": storage}) if config else None
    url = storage or cfg.storage_url
    folder = Path(artifacts) if artifacts else cfg.artifact_dir if cfg else None
    store = open_storage(url, read_only=True)  # never creates a file; reads a read-only one
    if cfg is not None:  # a typo in the name or the storage would serve a dashboard without it
        load_existing_study(url, cfg.study.name, storage=store)
    figures = FileSystemArtifactStore(str(folder)) if folder and folder.is_dir() else None
    shown = f", figures from {folder}" if figures else " (no figure folder: give --artifacts)"
    click.echo(
        f"optuna-dashboard on http://{host}:{port}/ for {mask_url(url)}{shown} (Ctrl-C stops)",
        err=True,
    )
    serve(store, host=host, port=port, artifact_store=figures)  # figures in reading order
