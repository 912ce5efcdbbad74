"""The objective on its own: Optuna's FixedTrial and in-memory studies, a real tiny backbone."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from autofreeze.config import load_config
from autofreeze.runs.prepare import prepare
from autofreeze.search.objective import Objective, TrialFailed
from autofreeze.search.space import SearchSpace
from autofreeze.study import records
from tests.studies import write_study

PLAN = {
    "boundary": 3,
    "schedule": "static",
    "head_lr": 1e-2,
    "backbone_lr_ratio": 0.3,
    "layer_decay": 1.0,
    "weight_decay": 0.0,
    "init": "pretrained",
}


def objective(tmp_path, search: str = "", epochs: int = 2, **overrides) -> Objective:
    path = write_study(tmp_path, weights="none", epochs=epochs, search=search)
    cfg = load_config(path, {f"training.{k}": v for k, v in overrides.items()})
    prepared = prepare(cfg)
    return Objective(prepared, SearchSpace.from_config(cfg.search, prepared.registry, 5))


class PruneAll(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_fixed_trial_trains_and_records_its_plan_cost_and_curves(tmp_path):
    trial = optuna.trial.FixedTrial(PLAN)
    value = objective(tmp_path)(trial)
    assert 0.0 <= value <= 1.0
    attrs = trial.user_attrs
    assert attrs[records.PLAN]["boundary"] == 3 and len(attrs[records.FROZEN_BLOCKS]) == 3
    assert [h["epoch"] for h in attrs[records.HISTORY]] == [1, 2]
    assert attrs[records.HISTORY][-1]["val_accuracy"] == pytest.approx(value, abs=1e-5)
    assert all(attrs[k] > 0 for k in records.COST)
    # blocks 0..2 are frozen for the whole trial: they ran once, into the prefix cache
    assert attrs[records.FEATURE_CACHE] is True
    assert attrs[records.CACHE] == {"kind": "prefix", "boundary": 3, "source": "computed"}


def test_a_linear_probe_is_served_from_the_feature_cache(tmp_path):
    obj = objective(tmp_path)
    trial = optuna.trial.FixedTrial({**PLAN, "boundary": 5})
    obj(trial)
    assert trial.user_attrs[records.FEATURE_CACHE] is True and obj.features.misses == 1


def test_a_diverging_trial_fails_with_its_reason_and_counts(tmp_path):
    obj = objective(tmp_path, search="head_lr = [1e-4, 1e9]")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({**PLAN, "boundary": 0, "head_lr": 1e9})
    study.optimize(obj, n_trials=1, catch=(TrialFailed,))
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert records.fail_reason(trial).startswith("diverged")
    assert records.counts(trial)


def test_baselines_are_never_pruned_and_searched_trials_are(tmp_path):
    obj = objective(tmp_path, epochs=3)  # the median pruner judges from epoch 2
    study = optuna.create_study(direction="maximize", pruner=PruneAll())
    study.enqueue_trial(PLAN, user_attrs={records.BASELINE: "recipe"})
    study.enqueue_trial(PLAN)
    study.optimize(obj, n_trials=2)
    recipe, searched = study.trials
    assert recipe.state == TrialState.COMPLETE and list(recipe.intermediate_values) == [2, 3]
    assert searched.state == TrialState.PRUNED and searched.user_attrs["pruned_at_epoch"] == 2
    assert searched.user_attrs[records.VALIDATION_SECONDS] > 0  # epoch 2's


def test_trials_validate_and_report_only_where_the_pruner_or_the_value_reads(tmp_path):
    """Median pruner, 4 epochs: judged from epoch 3 on. A searched trial (prefix cache) and a
    baseline (pooled features) validate and report at 3 and 4; a re-evaluation at 4 only."""
    obj = objective(tmp_path, epochs=4)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(PLAN)
    study.enqueue_trial({**PLAN, "boundary": 5}, user_attrs={records.BASELINE: "linear_probe"})
    study.enqueue_trial(PLAN, user_attrs=records.reevaluation_attrs(0, 1))
    study.optimize(obj, n_trials=3)
    searched, baseline, again = study.trials
    assert [records.cache_kind(t) for t in study.trials] == ["prefix", "pooled", "prefix"]
    for t, validated in ((searched, [3, 4]), (baseline, [3, 4]), (again, [4])):
        assert t.state == TrialState.COMPLETE
        assert list(t.intermediate_values) == validated
        history = records.history(t)
        assert [h["epoch"] for h in history if h["val_accuracy"] is not None] == validated
        assert [h["epoch"] for h in history if h["val_loss"] is not None] == validated
        assert all(isinstance(h["train_loss"], float) for h in history)
        json.dumps(history, allow_nan=False)  # null, never NaN: a browser reads it
        assert history[-1]["val_accuracy"] == pytest.approx(t.value, abs=1e-5)
        spent = t.user_attrs[records.VALIDATION_SECONDS]
        assert 0 <= spent < t.user_attrs[records.SECONDS]
        # a head on pooled features evaluates in well under the millisecond the record keeps
        assert spent > 0 or records.cache_kind(t) == "pooled"


def test_every_epoch_validation_reports_every_epoch(tmp_path):
    obj = objective(tmp_path, epochs=3, validate="every_epoch")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(PLAN)
    study.enqueue_trial(PLAN, user_attrs=records.reevaluation_attrs(0, 1))
    study.optimize(obj, n_trials=2)
    for t in study.trials:
        assert list(t.intermediate_values) == [1, 2, 3]
        assert all(h["val_accuracy"] is not None for h in records.history(t))


def test_an_epoch_not_validated_is_said_so(tmp_path):
    said = []
    obj = objective(tmp_path, epochs=3)
    obj.progress = said.append
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(PLAN)
    study.optimize(obj, n_trials=1)
    lines = [line for line in said if " epoch " in line]
    assert len(lines) == 3 and lines[0].endswith("epoch 1/3 [static] (not validated)")
    assert all("val_accuracy=" in line for line in lines[1:])


def test_no_pruning_during_a_head_only_warm_up(tmp_path):
    obj = objective(tmp_path, epochs=4)
    study = optuna.create_study(direction="maximize", pruner=PruneAll())
    study.enqueue_trial(
        {**PLAN, "boundary": 0, "schedule": "lp_ft", "lp_ft.lp_epochs": 2, "lp_ft.ft_lr_scale": 0.1}
    )
    study.optimize(obj, n_trials=1)
    (trial,) = study.trials
    # epochs 1-2 train the head only: judged from the first epoch the backbone trains
    assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_at_epoch"] == 3
    assert len(records.history(trial)) == 3  # a pruned trial keeps its curves so far
