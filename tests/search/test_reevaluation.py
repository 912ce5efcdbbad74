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
from autofreeze.study.storage import load_existing_study
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


@pytest.mark.slow  # several seconds: the full suite, not `make check`
def test_a_search_re_evaluates_its_top_plans_inside_the_budget_and_not_as_trials(tmp_path):
    config = write_study(
        tmp_path,
        "again",
        n_trials=12,  # a quarter of it (3) may re-run: the top 2 plans, 1 more seed each
        epochs=2,
        pruner="none",
        reevaluate=2,
        study_extra='baselines = false\nreevaluate_seeds = 2\nsampler = "random"',
    )
    result = CliRunner().invoke(cli, ["search", str(config), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # 12 trainings at most: 10 search trials, then up to 2 re-runs
    assert out["ran_this_time"] == 10
    study = load_existing_study(f"sqlite:///{tmp_path}/again.db", "again")
    again = records.reruns(study)
    assert len(study.trials) == 10  # the re-runs are not trials
    assert all(records.reevaluation_of(t) is None for t in study.trials)
    assert {r["seed"] for r in again} == {1}
    originals = {r["of"] for r in again}
    assert 1 <= len(originals) <= 2  # a clear lead after the first round stops the rest
    choice = records.choice(study)
    assert choice["trial"] in originals and len(choice["values"]) == 2
    assert choice["mean"] == pytest.approx(sum(choice["values"]) / 2)
    assert out["best"]["number"] == choice["trial"]
    text = CliRunner().invoke(cli, ["best", str(config)]).output
    assert "mean over 2 seeds" in text
    # Optuna's own views see the search's trials only
    assert study.best_trial.number in {t.number for t in study.trials}
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 10
    optuna.importance.get_param_importances(study)  # runs on search trials alone
    # resuming at the same budget runs nothing more, re-runs included
    same = CliRunner().invoke(cli, ["search", str(config), "--json"])
    assert json.loads(same.stdout)["ran_this_time"] == 0
    study = load_existing_study(f"sqlite:///{tmp_path}/again.db", "again")
    assert len(study.trials) == 10 and records.reruns(study) == again


def test_a_clear_lead_ends_the_re_runs_and_a_tie_keeps_them_going():
    from autofreeze.search.reevaluation import clear_lead

    lead = {"trial": 1, "mean": 0.95, "values": [0.95, 0.95, 0.96]}
    far = {"trial": 2, "mean": 0.60, "values": [0.6, 0.61, 0.59]}
    near = {"trial": 3, "mean": 0.945, "values": [0.93, 0.96, 0.945]}
    assert [s["trial"] for s in clear_lead([lead, far], maximize=True)] == [1]
    assert [s["trial"] for s in clear_lead([lead, far, near], maximize=True)] == [1, 3]
    one_run = [{**lead, "values": [0.95]}, {**far, "values": [0.6]}]
    assert len(clear_lead(one_run, maximize=True)) == 2  # no spread measured: all stay


def test_the_re_runs_stop_at_n_trials_and_at_the_time_left():
    from autofreeze.search.reevaluation import reevaluate
    from autofreeze.study.allowance import Allowance

    study = optuna.create_study(direction="maximize")
    for value in (0.7, 0.8, 0.9):
        trial = study.ask()
        trial.set_user_attr(records.PLAN, {"boundary": int(value * 10)})
        trial.set_user_attr(records.SECONDS, 2.0)
        study.tell(trial, value)
    ran: list[tuple[int, int]] = []

    def run_plan(t, seed):
        ran.append((t.number, seed))
        records.add_rerun(study, t.number, seed, 0.85, 2.0)
        return 0.85

    # n_trials 5 = 3 trials + 2 re-runs: the top 2 plans, one more seed each
    a = Allowance(trials=3, top=2, seeds=1, seconds=None)
    choice = reevaluate(study, a, 0, lambda _: None, run_plan, lambda: float("inf"))
    assert ran == [(2, 1), (1, 1)] and len(choice["values"]) == 2
    # a budget raised to 6 trials whose new top plan was never re-run: 6 + 2 > 7 trainings
    trial = study.ask()
    trial.set_user_attr(records.PLAN, {"boundary": 95})
    study.tell(trial, 0.95)
    more = Allowance(trials=4, top=2, seeds=2, seconds=None)  # n_trials = 8
    reevaluate(study, more, 0, lambda _: None, run_plan, lambda: float("inf"))
    assert len(records.reruns(study)) + 4 == 8  # stopped at n_trials, not at 4 + 2 x 2 re-runs
    # no time left for a 2-second re-run: none runs, the choice is still made and said
    fresh = optuna.create_study(direction="maximize")
    for t in study.trials[:3]:
        fresh.add_trial(t)
    said: list[str] = []
    ran.clear()
    choice = reevaluate(fresh, a, 0, said.append, run_plan, lambda: 1.0)
    assert ran == [] and "no room for more re-runs" in said[0] and choice["trial"] == 2
