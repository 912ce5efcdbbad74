"""The commands a reviewer runs: ``report`` (a study as one self-contained HTML page, or as
Markdown) and ``dashboard`` (optuna-dashboard on the study, with its figures)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

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
    envvar="AUTOFREEZE_ARTIFACTS",
    help="the studies' figures: a folder, s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX] "
    "([study] artifacts; default: the config's; env AUTOFREEZE_ARTIFACTS)",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(
    config: str | None, storage: str | None, artifacts: str | None, host: str, port: int
) -> None:
    """Serve optuna-dashboard on the study's storage: notes, figures and the report. With a
    CONFIG, its study must be in the storage (else: which studies are)."""
    from autofreeze.review.dashboard import serve
    from autofreeze.study.storage import load_existing_study, mask_url, open_storage

    if not (config or storage):
        raise click.UsageError("give a CONFIG or --storage URL")
    cfg = _config(config, **{"study.storage": storage}) if config else None
    url = storage or cfg.storage_url
    where = _figures_at(artifacts, cfg)
    store = open_storage(url, read_only=True)  # never creates a file; reads a read-only one
    if cfg is not None:  # a typo in the name or the storage would serve a dashboard without it
        load_existing_study(url, cfg.study.name, storage=store)
    if where is None:  # where each study's search put its figures, by its stored config
        figures, shown = _recorded_figures(store, url)
    else:
        figures = _figures(where)
        shown = f", figures from {where}" if figures else " (no figure folder: give --artifacts)"
    click.echo(
        f"optuna-dashboard on http://{host}:{port}/ for {mask_url(url)}{shown} (Ctrl-C stops)",
        err=True,
    )
    serve(store, host=host, port=port, artifact_store=figures)  # figures in reading order


def _figures_at(artifacts: str | None, cfg: Any) -> Any:
    """Where the figures are: --artifacts (a folder relative to here), else the config's."""
    from autofreeze.config import artifact_location

    if not artifacts:
        return cfg.artifacts if cfg is not None else None
    try:
        where = artifact_location(artifacts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--artifacts'") from None
    return where if where.scheme else replace(where, path=str(Path(where.path).resolve()))


def _recorded_figures(storage: Any, url: str) -> tuple[Any, str]:
    """The figures of every study in ``storage`` where its search put them (``[study]
    artifacts`` of the config each study stored, a folder resolved where the search ran), read
    as one store, and the words that say where; a study without a stored config is skipped."""
    import optuna

    from autofreeze.errors import AutofreezeError
    from autofreeze.study import records
    from autofreeze.study.artifacts import FirstOf
    from autofreeze.study.stored import stored_config

    places: list[Any] = []
    for summary in storage.get_all_studies():
        study = records.with_storage(
            optuna.load_study(study_name=summary.study_name, storage=storage), storage
        )
        try:
            place = stored_config(study, url).artifacts
        except AutofreezeError:  # not an autofreeze study, or its config no longer reads
            continue
        if place not in places:
            places.append(place)
    found, missing = [], []
    for place in places:
        try:
            store = _figures(place)
        except AutofreezeError:  # a bucket this machine cannot reach: said, not fatal
            store = None
        (found if store is not None else missing).append((place, store))
    if not found:
        elsewhere = f"the studies keep them in {_listed(missing)}, not here: " if missing else ""
        return None, f" (no figure folder: {elsewhere}give --artifacts)"
    stores = [store for _, store in found]
    shown = f", figures from {_listed(found)}"
    if missing:
        shown += f" (not here: {_listed(missing)}; give --artifacts)"
    return (stores[0] if len(stores) == 1 else FirstOf(stores)), shown


def _listed(places: list[tuple[Any, Any]]) -> str:
    return " and ".join(str(place) for place, _ in places)


def _figures(where: Any) -> Any:
    """The artifact store to serve figures from: a folder that exists (none is made), or a
    bucket that answers (else one line)."""
    from autofreeze.study.artifacts import check_artifact_store, open_artifact_store

    if where is None or (not where.scheme and not Path(where.path).is_dir()):
        return None
    check_artifact_store(where)
    return open_artifact_store(where, create=False)
