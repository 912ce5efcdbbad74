"""What optuna-dashboard shows of a study, written while it runs: the metric names, per trial
a Markdown note (plan in words, freeze map, cost, outcome) and a figure (learning curves with
the phase changes, the freeze map), and for the study a note (the best plan against every
recipe, whether the search was still improving, a link to the report) and plotly figures.

Figures live in Optuna's artifact store: a folder (``[study] artifacts``, by default
``<study>-artifacts`` beside the config), which workers on other machines must share to add
theirs. Notes and figures live in the study's storage, so any storage URL works. The user
attrs stay the machine-readable record; everything here is rebuilt from them.

A trial's figure is uploaded by the worker that ran it, before the trial is told (Optuna
takes no attribute of a finished trial); its note is written after, from the final state.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.progress import Progress, quiet
from autofreeze.review import story, study_story
from autofreeze.study import best_trial, records

FIGURE_NAME = "trial-{number}.png"
REPORT_NAME = "report.html"
_GAVE_UP: set[Path] = set()  # artifact folders this process could not write
GRAPH_PREFIX = "autofreeze-"  # graph object ids: re-publishing replaces a figure, not adds one


def artifact_store(folder: Path) -> Any:
    from optuna.artifacts import FileSystemArtifactStore

    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


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
    def folder(self) -> Path:
        return self.cfg.artifact_dir

    def store(self) -> Any:
        """The artifact store, or None once it failed (said once; the search goes on)."""
        if self._store is None and not self._broken:
            try:
                self._store = artifact_store(self.folder)
            except OSError as exc:
                self._give_up(exc)
        return self._store

    def _give_up(self, exc: OSError) -> None:
        self._broken = True
        if self.folder in _GAVE_UP:  # said once per process (the search and its re-runs)
            return
        _GAVE_UP.add(self.folder)
        self.progress(
            f"note: cannot write figures to {self.folder} ({exc.strerror or exc}); the "
            "dashboard shows the notes without them: set [study] artifacts to a writable folder"
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
        except OSError as exc:
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
        shown = {"best against the recipes": recipes_table(study, self.metric)}
        # the dashboard draws its own parameter importance (the report carries autofreeze's)
        drawn = study_figures(study, self.metric)
        shown |= {k: f for k, f in drawn.items() if k != IMPORTANCE_FIGURE}
        for title, figure in shown.items():
            if figure is not None:  # (the dashboard lists its figures in no fixed order)
                save_plotly_graph_object(study, figure, graph_object_id=GRAPH_PREFIX + _slug(title))

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
        except OSError as exc:
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


def recipes_table(study: optuna.Study, metric: str) -> Any:
    """The best plan against each textbook recipe as a table figure: the study page shows
    figures, while the study's note sits behind a tab."""
    import plotly.graph_objects as go

    best = best_trial(study)
    rows = study_story.recipe_rows(study, best) if best is not None else []
    if not rows:
        return None
    header = study_story.recipe_header(metric)
    columns = [
        [("-" if v is None else f"{v:.4f}" if isinstance(v, float) else v) for v in c]
        for c in zip(*rows, strict=True)
    ]
    figure = go.Figure(
        go.Table(
            columnwidth=[1.6, 0.8, 0.8, 3.4],
            header={"values": [f"<b>{h}</b>" for h in header], "align": "left"},
            cells={"values": columns, "align": "left", "height": 26},
        )
    )
    title = f"best: {story.trial_title(best)}, {metric} {records.metric_value(best):.4f}"
    # rows wrap in the dashboard's half-width panel: room for three lines each
    figure.update_layout(title=title, height=140 + 64 * len(rows), margin={"t": 50, "b": 10})
    return figure


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
