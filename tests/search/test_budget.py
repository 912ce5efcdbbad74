"""The budget holds everything a search trains: small budgets end cleanly with a choice, with
no trial left waiting or failed, and a resumed search does not grow."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from autofreeze.cli import cli
from autofreeze.config import load_config
from autofreeze.study import records
from autofreeze.study.allowance import Allowance, allowance, first_plans_room
from autofreeze.study.storage import load_existing_study
from tests.studies import write_study


def _study(tmp_path, name):
    return load_existing_study(f"sqlite:///{tmp_path}/{name}.db", name)


@pytest.mark.parametrize(
    ("n_trials", "search", "reruns", "first"),
    [(2, 2, 0, 1), (4, 4, 0, 3), (8, 6, 2, 4), (20, 17, 3, 12), (40, 34, 6, 23)],
)
def test_a_count_of_trainings_splits_into_search_trials_and_re_runs(
    tmp_path, n_trials, search, reruns, first
):
    cfg = load_config(write_study(tmp_path, n_trials=n_trials, reevaluate=3))
    cfg = cfg.model_copy(update={"study": cfg.study.model_copy(update={"reevaluate_seeds": 2})})
    a = allowance(cfg)
    assert (a.trials, a.reruns) == (search, reruns)
    assert a.trials + a.reruns <= n_trials
    assert first_plans_room(a, None) == first


def test_a_time_budget_queues_what_it_runs_and_keeps_a_share_for_the_re_runs():
    a = Allowance(trials=None, top=3, seeds=1, seconds=100.0)
    assert a.search_seconds == pytest.approx(80.0)
    assert first_plans_room(a, 10.0) == 8 - 8 // 3  # about 8 trials fit: a third sampled
    assert first_plans_room(a, 500.0) == 1  # not even one fits: the probe's first pick
    assert first_plans_room(Allowance(None, 0, 0, None), None) is None  # no limit: all


@pytest.mark.parametrize("bad", ["20 minutes", "m20", "1h-5m", "-3s", "5"])
def test_a_budget_that_is_not_a_duration_is_one_clear_line(tmp_path, bad):
    config = write_study(tmp_path, study_extra=f'budget = "{bad}"')
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert result.exit_code == 1, result.output
    assert "study.budget" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "tiny.db").exists()


def test_a_duration_is_seconds_and_a_time_budget_alone_has_no_trial_count(tmp_path):
    cfg = load_config(write_study(tmp_path, study_extra='budget = "1h30m"'))
    assert cfg.study.budget == 5400
    # the TinyStudy sets n_trials: both limits apply
    assert cfg.study.n_trials == 8
    text = (tmp_path / "tiny.toml").read_text().replace("n_trials = 8\n", "")
    (tmp_path / "alone.toml").write_text(text)
    assert load_config(tmp_path / "alone.toml").study.n_trials is None


def _leftovers(study):
    return [t for t in study.trials if t.state in (TrialState.WAITING, TrialState.FAIL)]


@pytest.mark.slow
@pytest.mark.parametrize("n_trials", [2, 4, 8])
def test_a_small_study_ends_with_a_choice_and_nothing_left_waiting(tmp_path, n_trials):
    name = f"small{n_trials}"
    config = write_study(
        tmp_path, name, n_trials=n_trials, epochs=1, pruner="none", reevaluate=3, probe=True
    )
    for run in range(2):  # the second run resumes a finished study: nothing grows
        result = CliRunner().invoke(cli, ["search", str(config), "--json"])
        assert result.exit_code == 0, result.output
        study = _study(tmp_path, name)
        assert not _leftovers(study), [(t.number, t.state) for t in _leftovers(study)]
        search = allowance(load_config(config)).trials
        assert len(study.trials) == search
        assert len(study.trials) + len(records.reruns(study)) <= n_trials
        choice = records.choice(study)
        assert choice is not None and choice["trial"] < len(study.trials)
        assert json.loads(result.stdout)["best"]["number"] == choice["trial"]
        if run == 0:
            kinds = [records.name(t) for t in study.trials]
            assert kinds.count("searched") >= 1  # the sampler always gets a trial
    if n_trials < 8:
        assert len(choice["values"]) == 1  # no room for re-runs: the best single run, said
        assert "no room to re-run" in result.output


@pytest.mark.slow
def test_a_time_budget_ends_cleanly_within_it_and_resumes_without_growing(tmp_path):
    config = write_study(
        tmp_path,
        "timed",
        n_trials=1,
        epochs=2,
        pruner="none",
        reevaluate=2,
        probe=True,
        study_extra='budget = "10s"',  # trials of about half a second: ten of them and more
    )
    text = config.read_text().replace("n_trials = 1\n", "")  # the time budget alone
    config.write_text(text)
    result = CliRunner().invoke(cli, ["search", str(config), "--json"])
    assert result.exit_code == 0, result.output
    study = _study(tmp_path, "timed")
    assert not _leftovers(study)
    spent = sum(records.seconds(t, 0.0) for t in study.trials) + sum(
        r["seconds"] for r in records.reruns(study)
    )
    typical = max(records.seconds(t, 0.0) for t in study.trials)
    assert spent <= 10 + typical  # the last trial may end past the budget, never two
    assert len(study.trials) >= 2 and records.choice(study) is not None
    again = CliRunner().invoke(cli, ["search", str(config), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["ran_this_time"] == 0
    assert len(_study(tmp_path, "timed").trials) == len(study.trials)


def test_a_time_budget_keeps_the_re_runs_share_only_once_the_search_has_run_enough_trials():
    from autofreeze.study import records
    from autofreeze.study.allowance import RERUN_FROM, search_spent

    a = Allowance(trials=None, top=3, seeds=1, seconds=100.0)

    def study_of(n: int, seconds: float) -> optuna.Study:
        study = optuna.create_study(direction="maximize")
        for _ in range(n):
            trial = study.ask()
            records.write_seconds(trial, seconds)
            study.tell(trial, 0.5)
        return study

    few = study_of(5, 17.0)  # 85 s of 100 in 5 trials: the search goes on to the whole budget
    assert not search_spent(a, few, few.get_trials(deepcopy=False))
    many = study_of(RERUN_FROM, 4.2)  # 84 s in 20 trials: a fifth is left for the re-runs
    assert search_spent(a, many, many.get_trials(deepcopy=False))
    no_reruns = Allowance(trials=None, top=0, seeds=0, seconds=100.0)
    assert not search_spent(no_reruns, many, many.get_trials(deepcopy=False))
