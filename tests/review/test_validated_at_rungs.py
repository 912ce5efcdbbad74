"""A study whose trials validate only where the pruner or the value reads (the default): its
histories hold null for the other epochs, and every view of it still draws and tells."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState

from autofreeze.config import load_config
from autofreeze.progress import quiet
from autofreeze.review import story
from autofreeze.review.dashboard import Publisher
from autofreeze.review.summary import trial_rows
from autofreeze.review.timing import epochs_run, seconds_per_epoch
from autofreeze.review.trial_figures import trial_figure, trial_png
from autofreeze.search.run import run_search
from autofreeze.study import records
from autofreeze.study.storage import load_existing_study
from tests.commands import invoke
from tests.studies import write_study

EPOCHS = 4  # the median pruner judges from epoch 3: epochs 1-2 are not validated


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rungs")
    config = write_study(
        folder, "rungs", n_trials=3, epochs=EPOCHS, dashboard=True, study_extra="baselines = false"
    )
    run_search(load_config(config), progress=quiet, observers=[Publisher(quiet)])
    study = load_existing_study(f"sqlite:///{folder / 'rungs.db'}", "rungs")
    return config, study


def test_histories_hold_null_where_not_validated_and_reports_only_at_rungs(searched):
    _, study = searched
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and records.name(t) == records.SEARCHED
        history = records.history(t)
        json.dumps(history, allow_nan=False)  # what a browser parses: null, never NaN
        assert [h["val_accuracy"] is None for h in history] == [True, True, False, False]
        assert [h["val_loss"] is None for h in history] == [True, True, False, False]
        assert list(t.intermediate_values) == [3, 4]
        assert epochs_run(t) == EPOCHS and seconds_per_epoch(t) > 0
        assert 0 < records.cost_value(t, records.VALIDATION_SECONDS) < records.seconds(t)
    assert [r["epochs_run"] for r in trial_rows(study)] == [EPOCHS] * 3


def test_figures_join_the_validated_points(searched, tmp_path):
    _, study = searched
    t = study.trials[0]
    fig = trial_figure(t, "val_accuracy")
    curves = {trace.name: trace for trace in fig.data if trace.name}
    assert list(curves["train_loss"].x) == [1, 2, 3, 4]
    for name in ("val_loss", "val_accuracy"):
        assert list(curves[name].x) == [3, 4] and None not in curves[name].y
        assert "markers" in curves[name].mode
    assert trial_png(t, "val_accuracy", tmp_path / "t.png").stat().st_size > 0
    note = story.trial_note(t, "val_accuracy")
    assert "### Learning curve" in note and "not validated" in note


def test_the_report_and_the_trials_table_cope(searched, tmp_path):
    config, _ = searched
    for fmt in ("html", "md"):
        out = tmp_path / f"report.{fmt}"
        result = invoke("report", str(config), "--out", str(out), "--format", fmt)
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0
    result = invoke("trials", str(config), "--wide")
    assert result.exit_code == 0, result.output
    rows = json.loads(invoke("trials", str(config), "--json").stdout)
    assert [r["epochs_run"] for r in rows] == [EPOCHS] * 3
