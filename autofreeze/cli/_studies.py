"""Commands on studies: search, worker, proxy, train, pretrain, probe (best and trials:
``_results.py``; report and dashboard: ``_report.py``)."""

from __future__ import annotations

from typing import Any

import click

from autofreeze.cli._group import (
    cli,
    echo_json,
    format_table,
    make_display,
    parse_assignments,
    with_verbosity,
)

WORKER_WAIT = 120.0  # seconds `autofreeze worker` waits for its study to appear


# -- studies -----------------------------------------------------------------------------------
def _config(path: str, **overrides: Any) -> Any:
    """Load a study config with CLI flags as dotted-key overrides (``training.epochs=...``)."""
    from autofreeze.config import load_config

    return load_config(path, overrides)


def _study_address(
    config: str | None, storage: str | None, study_name: str | None
) -> tuple[str, str]:
    """(storage URL, study name) from a CONFIG, or from --storage and --study-name."""
    if config:
        cfg = _config(config, **{"study.name": study_name, "study.storage": storage})
        return cfg.storage_url, cfg.study.name
    if not (storage and study_name):
        raise click.UsageError("give a CONFIG, or both --storage and --study-name")
    return storage, study_name


def _load_study(config: str | None, storage: str | None, study_name: str | None) -> Any:
    """The study named by a config, or by --storage and --study-name."""
    from autofreeze.study.storage import load_existing_study

    return load_existing_study(*_study_address(config, storage, study_name))


study_options = [
    click.argument("config", required=False, type=click.Path(dir_okay=False)),
    click.option(
        "--storage",
        envvar="AUTOFREEZE_STORAGE",
        help="Optuna storage URL "
        "(default: the config's, else sqlite beside it; env AUTOFREEZE_STORAGE)",
    ),
    click.option("--study-name", help="study name (default: the config's)"),
    click.option("--json", "as_json", is_flag=True, help="machine-readable output"),
]


def with_study_options(f: Any) -> Any:
    for option in reversed(study_options):
        f = option(f)
    return f


def _took(result: Any, search_seconds: float | None) -> str:
    """``search 2m06s, in all 4m27s with the preparation``: the search's time as the stderr
    end line says it (trials and re-runs), then the command's (weights, data, probe too)."""
    from autofreeze.review.format import duration

    in_all = f"in all {duration(result.seconds)}"
    if search_seconds is None:  # no display heard the search start and end
        return in_all
    return f"search {duration(search_seconds)}, {in_all} with the preparation"


def _report(
    result: Any, cfg: Any, as_json: bool, wide: bool = False, search_seconds: float | None = None
) -> None:
    from autofreeze.review.summary import COMPARISON_COLUMNS, best_summary, comparison
    from autofreeze.review.tables import COMPARISON_SHORT, LABELS, WIDTH

    rows = comparison(result.study)
    if as_json:
        echo_json(
            {
                **best_summary(result.study),
                "comparison": rows,
                "ran_this_time": result.ran,
                "seconds": round(result.seconds, 1),
                "search_seconds": None if search_seconds is None else round(search_seconds, 1),
            }
        )
        return
    click.echo(
        f"study {cfg.study.name}: {cfg.study.metric} ({cfg.study.direction}), "
        f"{rows[0]['of'] if rows else 0} finished trials, {result.ran} run now; "
        f"{_took(result, search_seconds)}"
    )
    if wide:
        click.echo(format_table(rows, COMPARISON_COLUMNS))
    else:
        click.echo(format_table(rows, COMPARISON_SHORT, width=WIDTH, labels=LABELS))
    if cfg.study.objectives:  # the result is the front, not the single best
        n = len(best_summary(result.study).get("pareto_front", []))
        click.echo(
            f"Pareto front on {' and '.join(cfg.study.objectives)}: {n} plan"
            f"{'s' if n != 1 else ''}; `autofreeze best CONFIG` lists them"
        )


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--n-trials", type=click.IntRange(min=1), help="total trial budget of the study")
@click.option(
    "--budget",
    help="the study's compute, all workers together: 20m, 1h or seconds (override "
    "[study] budget); the probe, trials and re-evaluation fit inside it",
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="seconds to run")
@click.option("--epochs", type=click.IntRange(min=1), help="override [training] epochs")
@click.option("--storage", envvar="AUTOFREEZE_STORAGE", help="Optuna storage URL")
@click.option("--study-name", help="override [study] name")
@click.option(
    "--devices",
    default="cpu",
    show_default=True,
    help="auto (every visible GPU, else CPU), cpu, or GPU ids like 0,1,3",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="CPU worker processes (default 1); GPUs get one worker each",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(min=1),
    default=None,
    help="override [study] heartbeat: seconds between trial heartbeats (a dead worker's "
    "trial is retried after three missed beats)",
)
@click.option(
    "--connect-attempts",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="tries to reach the database or storage proxy (exponential backoff: 1, 2, 4 ... s) "
    "before giving up; a job script that starts beside its database asks for more",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--wide", is_flag=True, help="every column in the comparison (default: 100 wide)")
@with_verbosity
def search(
    config: str,
    n_trials: int | None,
    budget: str | None,
    timeout: float | None,
    epochs: int | None,
    storage: str | None,
    study_name: str | None,
    devices: str,
    workers: int | None,
    heartbeat: int | None,
    connect_attempts: int,
    as_json: bool,
    wide: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Search freeze plans for the study CONFIG (a TOML file); re-running resumes."""
    from autofreeze.review.dashboard import Publisher
    from autofreeze.search.run import run_search

    overrides = {
        "study.n_trials": n_trials,
        "study.budget": budget,
        "study.timeout": timeout,
        "study.storage": storage,
        "study.name": study_name,
        "study.heartbeat": heartbeat,
        "training.epochs": epochs,
    }
    display = make_display(quiet, verbose)
    cfg = _config(config, **overrides)
    with display:
        result = run_search(
            cfg,
            devices=devices,
            workers=workers,
            progress=display,
            observers=[display, Publisher(display)],
            connect_attempts=connect_attempts,
        )
    _report(result, cfg, as_json, wide, display.search_seconds)


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--storage", envvar="AUTOFREEZE_STORAGE", help="Optuna storage URL")
@click.option("--study-name", help="the study to join (default: the config's)")
@click.option("--device", help="torch device to train on (default: [training] device)")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="seconds this worker runs"
)
@click.option(
    "--connect-attempts",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="tries to reach the database or storage proxy (exponential backoff) before giving up",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=WORKER_WAIT,
    show_default=True,
    help="seconds to wait for a study that does not exist yet (a search started at the same "
    "time is still preparing it); 0 fails at once",
)
@with_verbosity
@click.option("--relay", is_flag=True, hidden=True, help="send every line to the search")
def worker(
    config: str | None,
    storage: str | None,
    study_name: str | None,
    device: str | None,
    threads: int | None,
    timeout: float | None,
    connect_attempts: int,
    wait: float,
    quiet: bool,
    verbose: bool,
    relay: bool,
) -> None:
    """Join an existing study (from this or another machine) and run trials until its budget
    is spent. The worker runs the config stored in the study by `autofreeze search`; CONFIG,
    or --storage and --study-name, only say where the study is."""
    from autofreeze.review.dashboard import Publisher
    from autofreeze.search.run import join_study

    display = make_display(quiet, verbose, relay)
    url, name = _study_address(config, storage, study_name)
    if threads:
        import torch

        torch.set_num_threads(threads)
    with display:
        ran = join_study(
            url,
            name,
            device=device,
            timeout=timeout,
            connect_attempts=connect_attempts,
            wait=wait,
            progress=display,
            # a worker of `autofreeze search` leaves the study's view to the search
            observers=[display, Publisher(display, study_view=not relay)],
        )
    (display.detail if relay else display.print)(f"worker done: {ran} trials run")


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--storage",
    envvar="AUTOFREEZE_STORAGE",
    help="the database to serve (default: the config's; env AUTOFREEZE_STORAGE)",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="the address to listen on; 0.0.0.0 for every interface (the proxy has no "
    "authentication: keep it on a private network)",
)
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True)
def proxy(config: str | None, storage: str | None, host: str, port: int) -> None:
    """Serve a study database through Optuna's gRPC storage proxy until Ctrl-C or SIGTERM:
    workers (search, worker, best, trials, report, dashboard) reach it with --storage
    grpc://HOST:PORT, and only the proxy connects to the database."""
    from autofreeze.progress import stderr_progress
    from autofreeze.study.proxy_server import serve_proxy

    if not (config or storage):
        raise click.UsageError("give a CONFIG or --storage URL: the database to serve")
    url = storage or _config(config).storage_url
    serve_proxy(url, host=host, port=port, progress=stderr_progress)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--best", "use_best", is_flag=True, help="train the study's best plan")
@click.option(
    "--trial", type=click.IntRange(min=0), help="train trial N's plan (e.g. of the Pareto front)"
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="a plan value, e.g. boundary=3, schedule=gradual, gradual.every=2",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="checkpoint path (.safetensors; a .json sidecar is written beside it)",
)
@click.option(
    "--on",
    type=click.Choice(["train", "train+val"]),
    default=None,
    help="data to train on (default: train+val with --best, the final model; else train); "
    "--on train reproduces the trial",
)
@click.option("--storage", envvar="AUTOFREEZE_STORAGE", help="Optuna storage URL")
@click.option("--study-name", help="override [study] name")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="override [training] epochs (default with --best: the study's)",
)
@click.option("--json", "as_json", is_flag=True)
def train(
    config: str,
    use_best: bool,
    trial: int | None,
    params: tuple[str, ...],
    out: str,
    on: str | None,
    storage: str | None,
    study_name: str | None,
    epochs: int | None,
    as_json: bool,
) -> None:
    """Train one freeze plan (the study's best, a trial's, or given values) and write a
    checkpoint. With --best or --trial the study's stored config is used (the config its
    trials ran), so training on `train` reproduces the trial."""
    from pathlib import Path

    from autofreeze.plan import FreezePlan
    from autofreeze.runs.checkpoint import train_best, train_checkpoint

    if use_best + (trial is not None) + bool(params) != 1:
        raise click.UsageError("give one of --best, --trial N or --param KEY=VALUE")
    overrides = {"study.name": study_name, "study.storage": storage}
    from_study = use_best or trial is not None
    on = on or ("train+val" if from_study else "train")
    if from_study:
        cfg = _config(config, **overrides)
        info = train_best(cfg, Path(out), on=on, epochs=epochs, trial=trial)
    else:
        values = parse_assignments(params, "--param")
        if "boundary" not in values:
            raise click.UsageError("--param boundary=K is required")
        cfg = _config(config, **overrides, **{"training.epochs": epochs})
        info = train_checkpoint(cfg, FreezePlan.from_params(values), Path(out), on=on)
    if as_json:
        echo_json(info)
        return
    metrics = info["metrics"]
    seen = " (seen in training)" if on == "train+val" else ""
    test = f", test_accuracy {metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else ""
    click.echo(
        f"wrote {info['checkpoint']}: trained on {on}; "
        f"val_accuracy {metrics['val_accuracy']:.4f}{seen}{test}"
    )


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="retrain even if the weights file exists")
def pretrain(config: str, force: bool) -> None:
    """Make the config's local weights file from its [backbone.pretrain] recipe."""
    from autofreeze.runs.pretrain import ensure_weights

    path = ensure_weights(_config(config), force=force)
    click.echo(str(path) if path else "the config's weights are not a local file; nothing to do")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def probe(config: str, as_json: bool) -> None:
    """Which blocks to unfreeze: a linear probe on each block's pretrained features, the
    size/similarity quadrant and the recommended boundary (no study is touched)."""
    from autofreeze.runs.prepare import prepare
    from autofreeze.runs.pretrain import ensure_weights
    from autofreeze.search.probe import probe_lines, run_probe

    cfg = _config(config)
    ensure_weights(cfg)
    result = run_probe(prepare(cfg))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo("\n".join(probe_lines(result)))
