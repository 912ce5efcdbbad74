"""Cost-aware search: `[study] objectives` runs a multi-objective study whose result is a Pareto
front; any point of it trains with `train --trial N`; the single-objective default stays."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner

from autofreeze.cli import cli
from autofreeze.config import load_config
from autofreeze.errors import ConfigError
from autofreeze.progress import quiet
from autofreeze.review.dashboard import Publisher
from autofreeze.search.run import run_search
from autofreeze.study import records
from autofreeze.study.results import pareto_front
from tests.studies import write_study

MULTI = 'objectives = ["val_accuracy", "train_seconds"]'


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi")
    path = write_study(folder, "multi", n_trials=9, study_extra=MULTI, reevaluate=2, dashboard=True)
    result = run_search(load_config(path), progress=quiet, observers=[Publisher(quiet)])
    return path, result.study


@pytest.mark.parametrize(
    ("objectives", "words"),
    [
        ('["train_seconds", "val_accuracy"]', "is a metric"),
        ('["val_accuracy"]', "then one or two costs"),
        ('["val_accuracy", "val_accuracy"]', "each once"),
        ('["val_accuracy", "wall_clock"]', "unknown cost 'wall_clock'"),
    ],
)
def test_bad_objectives_are_one_line_naming_the_key(tmp_path, objectives, words):
    path = write_study(tmp_path, study_extra=f"objectives = {objectives}")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "study.objectives" in str(err.value) and words in str(err.value)
    assert "\n" not in str(err.value)


def test_the_metric_is_the_first_objective_and_costs_are_minimised(tmp_path):
    path = write_study(tmp_path, study_extra='objectives = ["val_loss", "peak_memory_mb"]')
    cfg = load_config(path)
    assert cfg.study.metric == "val_loss"
    assert cfg.study.directions == ["minimize", "minimize"]
    assert load_config(write_study(tmp_path, "single")).study.directions == ["maximize"]


def test_a_multi_objective_study_keeps_both_values_and_prunes_nothing(multi):
    _, study = multi
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "train_seconds"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 9  # nothing pruned (Optuna prunes one objective only), no re-runs
    for t in done:
        accuracy, seconds = t.values
        assert 0 <= accuracy <= 1 and seconds > 0
        assert accuracy == pytest.approx(records.history(t)[-1]["val_accuracy"], abs=1e-5)
    assert records.choice(study) is None  # the front is the choice


def test_the_pareto_front_is_exactly_the_trials_no_other_beats(multi):
    _, study = multi
    front = pareto_front(study)
    assert front
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]

    def beats(a, b):
        return (a.values[0] >= b.values[0] and a.values[1] <= b.values[1]) and a.values != b.values

    for t in done:
        beaten = any(beats(o, t) for o in done)
        same_as_front = any(t.values == f.values for f in front)
        assert beaten != same_as_front, t.number
    assert [t.values[0] for t in front] == sorted((t.values[0] for t in front), reverse=True)


def test_train_any_point_of_the_front(multi, tmp_path):
    path, study = multi
    cheapest = pareto_front(study)[-1]
    out = tmp_path / "cheap.safetensors"
    args = ["train", str(path), "--trial", str(cheapest.number), "--on", "train"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["plan"] == records.plan(cheapest)
    # on the data the trial ran, the checkpoint reproduces the trial
    assert info["metrics"]["val_accuracy"] == pytest.approx(cheapest.values[0], abs=1e-6)
    bad = CliRunner().invoke(cli, ["train", str(path), "--trial", "99", "--out", str(out)])
    assert bad.exit_code == 1 and "no trial 99" in bad.output


def test_a_single_objective_study_refuses_a_multi_objective_config(multi, tmp_path):
    path, _ = multi
    single = path.with_name("single.toml")
    single.write_text(path.read_text().replace(MULTI, ""))
    with pytest.raises(ConfigError) as err:
        run_search(
            load_config(single, {"study.name": "multi"}),
            progress=quiet,
            observers=[Publisher(quiet)],
        )
    assert "maximize/minimizes" in str(err.value) or "objectives" in str(err.value)


def test_best_lists_the_pareto_front_and_how_to_train_a_point_of_it(multi):
    path, study = multi
    front = pareto_front(study)
    out = CliRunner().invoke(cli, ["best", str(path)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert (
        f"Pareto front: {len(front)} plan" in lines[0]
        and "val_accuracy and train_seconds" in lines[0]
    )
    numbers = [int(line.split()[0]) for line in lines[3 : 3 + len(front)]]
    assert numbers == [t.number for t in front]
    assert all(len(line) <= 100 for line in lines)
    assert "--trial N" in lines[-1]
    summary = json.loads(CliRunner().invoke(cli, ["best", str(path), "--json"]).stdout)
    assert [r["number"] for r in summary["pareto_front"]] == [t.number for t in front]
    assert summary["objectives"] == ["val_accuracy", "train_seconds"]


def test_the_report_of_a_multi_objective_study_lists_its_front(multi, tmp_path):
    path, study = multi
    front = pareto_front(study)
    for name in ("r.md", "r.html"):
        out = CliRunner().invoke(cli, ["report", str(path), "--out", str(tmp_path / name)])
        assert out.exit_code == 0, out.output
    md = (tmp_path / "r.md").read_text()
    assert "## Pareto front" in md and "| trial | val_accuracy | train_seconds | plan |" in md
    rows = [line for line in md.split("## Pareto front", 1)[1].splitlines() if "| trial " in line]
    assert [int(r.split()[2]) for r in rows[1:]] == [t.number for t in front]
    assert 'id="front"' in (tmp_path / "r.html").read_text()
