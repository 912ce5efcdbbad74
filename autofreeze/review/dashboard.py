"""What optuna-dashboard shows of a study, written while it runs: the metric names, per trial
a Markdown note (plan in words, freeze map, cost, outcome) and a figure (learning curves with
the phase changes, the freeze map), and for the study a note (the best plan against every
recipe, whether the search was still improving, a link to the report) and plotly figures.

Figures live in Optuna's artifact store (``[study] artifacts``: a folder, by default
``<study>-artifacts`` beside the config, which workers on other machines must share to add
theirs, or an S3 or GCS bucket; see :mod:`autofreeze.study.artifacts`). Notes and figures'
metadata live in the study's storage, so any storage URL works. What
:mod:`autofreeze.study.records` stores stays the machine-readable record; everything here is
rebuilt from it. :func:`serve` runs optuna-dashboard with the study's figures in reading order.

A trial's figure is uploaded by the worker that ran it, before the trial is told (Optuna
takes no attribute of a finished trial); its note is written after, from the final state.
"""

from __future__ import annotations

import json
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.errors import AutofreezeError
from autofreeze.progress import Progress, quiet
from autofreeze.review import story, study_story
from autofreeze.study import best_trial, records
from autofreeze.study.artifacts import open_artifact_store, store_errors

FIGURE_NAME = "trial-{number}.png"
REPORT_NAME = "report.html"
_GAVE_UP: set[str] = set()  # artifact stores this process could not write
GRAPH_PREFIX = "autofreeze-"  # graph object ids: re-publishing replaces a figure, not adds one
RECIPES_TABLE = "best against the recipes"  # the study page's first figure: the answer


def metric_names(cfg: Any) -> list[str]:
    return list(cfg.study.objectives or [cfg.study.metric])


class Publisher:
    """One per process: writes the dashboard's view of the trials this process runs.

    A :class:`autofreeze.search.observer.SearchObserver`: the CLI hands it to the search, which
    tells it when a run starts, when each trial has run (its figure is attached then, while the
    trial is still RUNNING: Optuna attaches files only to a running trial), when each trial is
    told (its note, from the final state) and when the run ends (the study's view). Every id
    it writes by comes from the storage's public lookups (``run.on``).
    """

    def __init__(self, progress: Progress = quiet, *, study_view: bool = True) -> None:
        """``study_view=False``: a worker whose search writes the study's view when all its
        workers are done (``autofreeze worker --relay``) leaves it to the search."""
        self.progress = progress
        self.study_view = study_view
        self.cfg: Any = None
        self.enabled = False
        self._store: Any = None
        self._broken = False
        self._drawing_failed = False

    @property
    def metric(self) -> str:
        return self.cfg.study.metric

    @property
    def folder(self) -> str:
        """The artifact store's folder or bucket URL (``[study] artifacts``)."""
        return str(self.cfg.artifacts)

    def store(self) -> Any:
        """The artifact store, or None once it failed (said once; the search goes on)."""
        if self._store is None and not self._broken:
            try:
                self._store = open_artifact_store(self.cfg.artifacts)
            except store_errors() as exc:
                self._give_up(exc)
        return self._store

    def _give_up(self, exc: BaseException) -> None:
        self._broken = True
        if self.folder in _GAVE_UP:  # said once per process (the search and its re-runs)
            return
        _GAVE_UP.add(self.folder)
        why = getattr(exc, "strerror", None) or exc
        self.progress(
            f"note: cannot write figures to {self.folder} ({why}); the dashboard shows the "
            "notes without them: set [study] artifacts to a writable folder or bucket"
        )

    # -- the observer's events ---------------------------------------------------------------
    def started(self, run: Any) -> None:
        self.cfg = run.cfg
        self.enabled = run.cfg.study.dashboard
        if self.enabled and run.study.metric_names != metric_names(self.cfg):
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                run.study.set_metric_names(metric_names(self.cfg))

    def trial_ran(
        self, run: Any, trial: optuna.Trial, state: TrialState, values: list[float] | None
    ) -> None:
        """Upload the figure of a trial whose result is known, before it is told."""
        if not self.enabled or self.store() is None:
            return
        frozen = run.on.storage.get_trial(run.on.trial_id(trial.number))
        if not records.history(frozen):
            return  # failed before its first epoch: nothing to draw
        frozen.state, frozen.values = state, values
        from optuna.artifacts import upload_artifact

        from autofreeze.review.figures import trial_png

        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / FIGURE_NAME.format(number=trial.number)
                trial_png(frozen, self.metric, path)
                upload_artifact(
                    artifact_store=self._store, file_path=str(path), study_or_trial=trial
                )
        except store_errors() as exc:  # the folder or the bucket, not the drawing
            self._give_up(exc)
        except Exception as exc:  # a bug in drawing must not cost the trial its result
            if not self._drawing_failed:
                self._drawing_failed = True
                why = f"{type(exc).__name__}: {exc}"
                self.progress(
                    f"note: could not draw trial {trial.number}'s figure (a bug, {why}); "
                    "the trials and notes go on"
                )

    def trial_told(self, run: Any, trial: FrozenTrial) -> None:
        """The trial's note, from its final state (written after it was told)."""
        if not self.enabled or records.over_budget(trial):
            return
        from optuna_dashboard import save_note

        body = story.trial_note(trial, self.metric)
        figure = next((a for a in trial_artifacts(trial) if a["filename"].endswith(".png")), None)
        if figure is not None:  # the picture first, under the outcome: above the fold
            trial_id = run.on.trial_id(trial.number)
            url = f"/artifacts/{run.on.study_id}/{trial_id}/{figure['artifact_id']}"
            title, outcome, rest = body.split("\n\n", 2)
            body = f"{title}\n\n{outcome}\n\n![learning curves and freeze map]({url})\n\n{rest}"
        # notes live in the study's attributes: a told trial can still get one
        save_note(run.on.live_trial(trial.number), body)

    def ended(self, run: Any) -> None:
        """The study's note, figures and report (at the end of a run, by any worker)."""
        if not self.enabled or not self.study_view:
            return
        from optuna_dashboard import save_note, save_plotly_graph_object

        from autofreeze.review.figures import IMPORTANCE_FIGURE, study_figures

        study = run.study
        link = self._report(run)
        note = study_story.study_note(study, self.metric, link)
        save_note(study, note + config_markdown(records.config(study)))
        shown = {RECIPES_TABLE: recipes_table(study, self.metric)}
        # the dashboard draws its own parameter importance (the report carries autofreeze's)
        drawn = study_figures(study, self.metric)
        shown |= {k: f for k, f in drawn.items() if k != IMPORTANCE_FIGURE}
        for title, figure in shown.items():
            if figure is not None:  # shown in the order of figure_order() (see serve())
                save_plotly_graph_object(study, figure, graph_object_id=graph_id(title))

    def _report(self, run: Any) -> str:
        """The HTML report as a study artifact (the previous one replaced); its link."""
        study = run.study
        store = self.store()
        if store is None or best_trial(study) is None:
            return ""
        from optuna.artifacts import upload_artifact

        from autofreeze.review.report import write_report

        try:
            for old in study_artifacts(run):
                if old["filename"] == REPORT_NAME:
                    store.remove(old["artifact_id"])
                    forget_artifact(run, old["artifact_id"])
            with tempfile.TemporaryDirectory() as tmp:
                path = write_report(study, self.metric, Path(tmp) / REPORT_NAME)
                aid = upload_artifact(
                    artifact_store=store, file_path=str(path), study_or_trial=study
                )
        except store_errors() as exc:
            self._give_up(exc)
            return ""
        return (
            f"**Report:** [{REPORT_NAME}](/artifacts/{run.on.study_id}/{aid}) (one file, opens "
            "offline; `autofreeze report CONFIG --out FILE` writes it anywhere)."
        )


ARTIFACT_PREFIX = "artifacts:"  # optuna.artifacts' attribute prefix (study and trial)


def _metas(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, value in attrs.items():
        if key.startswith(ARTIFACT_PREFIX):
            meta = json.loads(value) if isinstance(value, str) else value
            if meta:
                out.append(meta)
    return out


def trial_artifacts(trial: FrozenTrial) -> list[dict[str, Any]]:
    return _metas(trial.system_attrs)


def study_artifacts(run: Any) -> list[dict[str, Any]]:
    """The study's artifacts that are still listed (``optuna.artifacts.get_all_artifact_meta``
    cannot read an entry :func:`forget_artifact` dropped)."""
    return _metas(run.on.storage.get_study_system_attrs(run.on.study_id))


def forget_artifact(run: Any, artifact_id: str) -> None:
    """Drop a study artifact's entry, so the dashboard no longer lists it.

    Optuna has no public call for it: an artifact's entry is the study system attribute
    ``artifacts:<id>`` (``optuna.artifacts``), and optuna-dashboard skips entries set to
    ``null``. tests/review/test_dashboard.py fails if a new Optuna lists a replaced report again.
    """
    run.on.storage.set_study_system_attr(run.on.study_id, ARTIFACT_PREFIX + artifact_id, "null")


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def graph_id(title: str) -> str:
    """The id a study figure is saved under (the same at every publish: it replaces it)."""
    return GRAPH_PREFIX + _slug(title)


def figure_order() -> list[str]:
    """The graph object ids in reading order: the table of the best against the recipes,
    then the study figures as :func:`autofreeze.review.figures.study_figures` orders them."""
    from autofreeze.review import figures

    titles = [
        figures.PROBE_FIGURE,
        figures.BASELINES_FIGURE,
        figures.BOUNDARY_FIGURE,
        figures.SECONDS_FIGURE,
        figures.PARAMS_FIGURE,
        figures.HISTORY_FIGURE,
    ]
    return [graph_id(RECIPES_TABLE), *(graph_id(t) for t in titles)]


def _in_reading_order(ids: list[str]) -> list[str]:
    order = {g: i for i, g in enumerate(figure_order())}
    return sorted(ids, key=lambda g: (order.get(g, len(order)), g))


def sort_dashboard_figures() -> None:
    """Make optuna-dashboard list a study's figures in reading order (:func:`figure_order`,
    other ids after them by name), the same at every start.

    optuna-dashboard (0.21) lists the ids of ``save_plotly_graph_object`` from a ``set``
    (``optuna_dashboard._custom_plot_data.list_graph_object_ids``), whose order changes with
    Python's string hashing at every start of the server; it has no public call to order them.
    This adapter wraps that function; tests/review/test_dashboard.py starts the server with two
    hash seeds and fails if a new optuna-dashboard no longer goes through it.
    """
    from optuna_dashboard import _custom_plot_data as plots

    listed = plots.list_graph_object_ids
    if getattr(listed, "in_reading_order", False):
        return

    def in_order(system_attrs: dict[str, Any]) -> list[str]:
        return _in_reading_order(listed(system_attrs))

    in_order.in_reading_order = True  # type: ignore[attr-defined]
    plots.list_graph_object_ids = in_order


def serve(storage: Any, *, host: str, port: int, artifact_store: Any = None) -> None:
    """optuna-dashboard on ``storage`` (what ``autofreeze dashboard`` runs), the figures of
    each study in reading order, until a stop signal.

    Requests are served in a thread of their own and the main thread only waits, so SIGINT and
    SIGTERM (raised there as :class:`autofreeze.search.signals.Stopped` by the CLI's handler)
    always stop the server. ``optuna_dashboard.run_server`` serves in the main thread: a signal
    that arrived during a request was caught by wsgiref's error handling and the server went
    on serving, and one between requests ended it with exit code 0.
    """
    import optuna_dashboard

    sort_dashboard_figures()
    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)
    try:
        server = make_server(host, port, app)  # a line per request on stderr, as before
    except OSError as exc:  # the port is taken, the host is not this machine's, ...
        raise AutofreezeError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}; give another --port (or --host)"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        threading.Event().wait()  # a signal handler's exception ends the wait
    finally:
        server.shutdown()
        server.server_close()


def recipes_table(study: optuna.Study, metric: str) -> Any:
    """The best plan against each textbook recipe as a table figure: the study page shows
    figures, while the study's note sits behind a tab."""
    import plotly.graph_objects as go

    best = best_trial(study)
    rows = study_story.recipe_rows(study, best) if best is not None else []
    if not rows:
        return None
    from autofreeze.review.figures import LAYOUT, titled

    header = study_story.recipe_header(metric)
    columns = [
        [("-" if v is None else f"{v:.4f}" if isinstance(v, float) else v) for v in c]
        for c in zip(*rows, strict=True)
    ]
    figure = go.Figure(
        go.Table(
            columnwidth=column_widths(header, columns),
            header={"values": [f"<b>{h}</b>" for h in header], "align": "left"},
            cells={"values": columns, "align": "left", "height": 26},
        )
    )
    head = titled(
        f"best: {story.trial_title(best)}",
        f"{metric} {records.metric_value(best):.4f}, against each textbook recipe",
        bottom=10,
    )
    # the card's height: plotly scrolls the rows that do not fit (the header stays)
    margin = {**head["margin"], "l": 10, "r": 10}
    figure.update_layout(title=head["title"], height=LAYOUT["height"], margin=margin)
    # a table does not push the title's margin as a plot does: 16 px between them
    table_height = LAYOUT["height"] - margin["t"] - margin["b"]
    figure.update_traces(domain={"y": [0, 1 - 16 / table_height]})
    return figure


TABLE_CHAR = 7.5  # pixels a character of the table's 12 px type takes (bold, at most)
TABLE_PAD = 18  # pixels of a cell's padding


def column_widths(header: list[str], columns: list[list[Any]]) -> list[float]:
    """The table's column widths (plotly scales them to the table): each column as wide as
    its longest word (plotly wraps a cell at spaces and cuts a word that does not fit), the
    last one, the plan's differences, as wide as the rest of a half-width card."""
    widths = [
        TABLE_PAD + TABLE_CHAR * max(len(w) for v in [h, *c] for w in str(v).split() or [""])
        for h, c in zip(header, columns, strict=True)
    ]
    card = 540  # pixels of a half-width card's table in a 1280-pixel window
    return [*widths[:-1], max(widths[-1], card - sum(widths[:-1]))]


def config_markdown(stored: dict[str, Any] | None) -> str:
    """The config the study's trials ran, as TOML in a code block (the study's user attr
    holds it as JSON, which optuna-dashboard cuts at 1024 characters)."""
    if not stored:
        return ""
    lines = ["", "### The config every trial ran", "", "```toml"]

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    for section, table in stored.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join([*lines[:-1], "```", ""])
