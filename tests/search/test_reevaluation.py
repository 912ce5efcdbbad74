"""The final choice: the top plans re-run with other seeds; the choice goes by the mean."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from autofreeze.cli import cli
from autofreeze.search.reevaluation import choose
from autofreeze.study import best_trial, records
from tests.studies import write_study


def test_the_best_mean_wins_and_the_cheaper_plan_wins_within_the_noise():
    a = {"trial": 1, "mean": 0.90, "sem": 0.03, "ci95": 0.13, "seconds": 9.0, "values": [0.9]}
    b = {"trial": 2, "mean": 0.88, "sem": 0.02, "ci95": 0.09, "seconds": 3.0, "values": [0.88]}
    c = {"trial": 3, "mean": 0.70, "sem": 0.01, "ci95": 0.04, "seconds": 1.0, "values": [0.7]}
    assert choose([a, b, c], maximize=True)["trial"] == 2  # within one SE of the best, cheaper
    # within the 95 % interval but beyond one standard error: the better mean stays
    assert choose([a, {**b, "mean": 0.86}, c], maximize=True)["trial"] == 1
    assert choose([a, b, c], maximize=False)["trial"] == 3  # a loss: lower is better
    assert choose([{**a, "sem": None}, b], maximize=True)["trial"] == 1  # one run: no noise
    # within the noise but only 10 % cheaper: timing noise, the better mean stays
    assert choose([a, {**b, "seconds": 8.1}, c], maximize=True)["trial"] == 1


def test_a_lucky_reevaluation_seed_does_not_make_a_plan_best():
    study = optuna.create_study(direction="maximize")
    for value, attrs in ((0.80, {}), (0.85, {}), (0.99, {records.REEVALUATION_OF: 0})):
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, value)
    assert best_trial(study).number == 1
    study.set_user_attr(records.CHOICE, {"trial": 0})
    assert best_trial(study).number == 0  # once chosen by re-evaluation


def test_a_search_re_evaluates_its_top_plans_and_names_the_best_by_the_mean(tmp_path):
    config = write_study(
        tmp_path,
        "again",
        n_trials=4,
        epochs=2,
        pruner="none",
        reevaluate=2,
        study_extra='baselines = false\nreevaluate_seeds = 2\nsampler = "random"',
    )
    result = CliRunner().invoke(cli, ["search", str(config), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ran_this_time"] == 4  # the budget counts the searched trials only
    study = optuna.load_study(study_name="again", storage=f"sqlite:///{tmp_path}/again.db")
    again = [t for t in study.trials if records.reevaluation_of(t) is not None]
    assert len(again) == 4 and all(t.state == TrialState.COMPLETE for t in again)
    assert {t.user_attrs[records.SEED] for t in again} == {1, 2}
    originals = {records.reevaluation_of(t) for t in again}
    assert len(originals) == 2 and all(
        study.trials[n].params == t.params for t in again for n in [records.reevaluation_of(t)]
    )
    choice = study.user_attrs[records.CHOICE]
    assert choice["trial"] in originals and len(choice["values"]) == 3
    assert choice["mean"] == pytest.approx(sum(choice["values"]) / 3)
    assert out["best"]["number"] == choice["trial"]
    assert out["best"]["reevaluation"]["ci95"] > 0 or len(set(choice["values"])) == 1
    text = CliRunner().invoke(cli, ["best", str(config)]).output
    assert "mean over 3 seeds" in text
    rows = json.loads(CliRunner().invoke(cli, ["trials", str(config), "--json"]).output)
    assert sum(r["name"].startswith("re-eval #") for r in rows) == 4
    # resuming at the same budget runs nothing more, re-evaluations included
    same = CliRunner().invoke(cli, ["search", str(config), "--json"])
    assert json.loads(same.stdout)["ran_this_time"] == 0
    assert (
        len(optuna.load_study(study_name="again", storage=f"sqlite:///{tmp_path}/again.db").trials)
        == 8
    )
