"""A study on a real SQLite file: create and resume, the stored config, baselines, budget."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autofreeze.config import load_config
from autofreeze.errors import ConfigError, StorageError
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry
from autofreeze.progress import quiet
from autofreeze.recipes import BASELINE_NAMES
from autofreeze.search.baselines import baseline_plans, enqueue_first, first_plans
from autofreeze.search.space import SearchSpace
from autofreeze.study import (
    best_plan,
    budget,
    make_pruner,
    make_sampler,
    open_study,
    records,
    run_stream,
    sampler_seed,
    store_config,
    stored_config,
)
from tests.studies import write_study

# trials are created by hand here (ask/tell), which Optuna warns about with heartbeats on
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


@pytest.fixture
def cfg(tmp_path):
    return load_config(write_study(tmp_path, "s", n_trials=4))


def test_open_study_creates_then_resumes(cfg):
    first = open_study(cfg)
    again = open_study(cfg)
    assert first._study_id == again._study_id
    assert str(cfg.storage_url).endswith("/s.db")


def test_the_stored_config_round_trips_masks_the_password_and_takes_overrides(cfg):
    study = open_study(cfg)
    secret = cfg.model_copy(
        update={"study": cfg.study.model_copy(update={"storage": "postgresql://u:pw@h/db"})}
    )
    store_config(study, secret)
    assert records.config(study)["study"]["storage"] == "postgresql://u:***@h/db"
    back = stored_config(study, cfg.storage_url, {"training.epochs": 7})
    assert back.study.storage == cfg.storage_url  # the real URL, not the masked one
    assert back.training.epochs == 7
    assert back.backbone == cfg.backbone and back.search == cfg.search
    assert back.dataset_options() == cfg.dataset_options()
    assert back.weights_path() == cfg.weights_path()  # relative paths: the config's folder


def test_a_study_without_a_stored_config_says_how_to_fix_it(cfg):
    study = open_study(cfg)
    with pytest.raises(ConfigError, match="run `autofreeze search CONFIG`"):
        stored_config(study, cfg.storage_url)


def test_the_first_plans_are_the_recipes_in_order_or_as_many_as_the_budget_runs(cfg):
    study = open_study(cfg)
    space = SearchSpace.from_config(cfg.search, Registry(), 5)
    recipes = baseline_plans(space, 5, 2)
    priors = [("probe_k4", FreezePlan(boundary=4))]
    enqueue_first(study, space, first_plans(recipes, priors, 4, True, None), quiet)
    trials = study.get_trials()
    names = [records.baseline(t) or t.user_attrs.get(records.PRIOR) for t in trials]
    assert names == [*BASELINE_NAMES, "probe_k4"]
    assert all(t.state == TrialState.WAITING for t in trials)
    # a budget for three: the probe's boundary (4) first, the scratch reference last
    kept = [n for _, n, _ in first_plans(recipes, priors, 4, True, 3)]
    assert kept == ["probe_k4", "linear_probe", "freeze_first_half"]
    assert [n for _, n, _ in first_plans(recipes, priors, None, False, 2)] == list(
        BASELINE_NAMES[:2]
    )  # no probe: the recipes in their order


def test_the_budget_counts_what_used_compute(cfg):
    study = open_study(cfg)
    study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=TrialState.PRUNED)
    failed = study.ask()
    records.write_failure(failed, "diverged")
    study.tell(failed, state=TrialState.FAIL)
    cut = study.ask()
    study.tell(cut, state=TrialState.FAIL)  # Ctrl-C: no reason, retried, not counted
    study.ask()  # running
    assert budget(study) == (3, 1)
    cut_frozen = study.get_trials()[3]
    assert not records.counts(cut_frozen)
    assert records.retry_attrs(cut_frozen) == {records.RETRY_OF: 3}


def test_best_plan(cfg):
    study = open_study(cfg)
    with pytest.raises(StorageError, match="no finished trial"):
        best_plan(study)
    plan = FreezePlan(boundary=2, schedule="gradual", schedule_params={"every": 2})
    trial = study.ask()
    trial.set_user_attr(records.PLAN, plan.to_dict())
    study.tell(trial, 0.9)
    assert best_plan(study) == plan


def with_study(cfg, **changes):
    return cfg.model_copy(update={"study": cfg.study.model_copy(update=changes)})


@pytest.mark.parametrize(
    ("key", "value", "make", "cls"),
    [
        ("sampler", "tpe", make_sampler, optuna.samplers.TPESampler),
        ("sampler", "random", make_sampler, optuna.samplers.RandomSampler),
        ("sampler", "cmaes", make_sampler, optuna.samplers.CmaEsSampler),
        ("sampler", "qmc", make_sampler, optuna.samplers.QMCSampler),
        ("sampler", "gp", make_sampler, optuna.samplers.GPSampler),
        ("pruner", "median", make_pruner, optuna.pruners.MedianPruner),
        ("pruner", "hyperband", make_pruner, optuna.pruners.HyperbandPruner),
        ("pruner", "none", make_pruner, optuna.pruners.NopPruner),
    ],
)
def test_samplers_and_pruners_follow_the_config(cfg, key, value, make, cls):
    made = make(with_study(cfg, **{key: value}))
    assert isinstance(getattr(made, "inner", made), cls)  # median and percentile: like with like


def test_a_plan_is_judged_against_the_completed_plans_of_its_own_kind(cfg):
    """A head on cached features plateaus early; a fine-tuning curve that would cross it later
    is judged against other fine-tuning curves, not against that plateau."""
    cfg = with_study(cfg, pruner="percentile", prune_after=0.2, prune_percentile=50.0)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 10})})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))

    def run(boundary, value, tell=True):
        trial = study.ask()
        trial.set_user_attr(records.PLAN, {"boundary": boundary})
        trial.set_user_attr(records.BLOCKS, [f"b{i}" for i in range(5)])
        trial.report(value, step=5)
        judged = trial.should_prune()
        if tell:
            study.tell(trial, value)
        return judged

    for value in (0.90, 0.91, 0.92):  # head-only plateaus
        run(5, value)
    for value in (0.50, 0.60, 0.70):  # fine-tuning at epoch 5, still rising
        run(0, value)
    assert not run(0, 0.65, tell=False)  # against fine-tuning: above the median 0.6
    assert run(5, 0.65, tell=False)  # a head-only plan that low is behind its own kind


def test_each_worker_and_run_samples_from_a_seed_of_its_own(cfg):
    study = open_study(cfg)
    streams = {run_stream(study, "cpu0"), run_stream(study, "cpu1")}
    study.tell(study.ask(), 0.1)
    streams.add(run_stream(study, "cpu0"))  # a resumed run: the study holds more trials
    assert len({sampler_seed(0, s) for s in streams}) == 3
    assert run_stream(study, "main") == run_stream(study, "main")  # reproducible
    c = with_study(cfg, sampler="random")
    draws = []
    for stream in sorted(streams):
        s = optuna.create_study(sampler=make_sampler(c, stream))
        draws.append(s.ask().suggest_float("x", 0, 1))
    assert len(set(draws)) == 3


@pytest.mark.parametrize(("pruner", "after", "first"), [("percentile", 0.5, 5), ("median", 0.2, 2)])
def test_no_trial_is_judged_before_prune_after(cfg, pruner, after, first):
    """A hopeless trial among good ones runs until ``prune_after`` of the epochs, then stops."""
    cfg = with_study(cfg, pruner=pruner, prune_after=after)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 10})})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    for _ in range(3):
        good = study.ask()
        for epoch in range(1, 11):
            good.report(0.9, step=epoch)
        study.tell(good, 0.9)
    hopeless = study.ask()
    verdicts = []
    for epoch in range(1, 11):
        hopeless.report(0.1, step=epoch)
        verdicts.append(hopeless.should_prune())
    assert verdicts.index(True) + 1 == first


@pytest.mark.parametrize("pruner", ["percentile", "median"])
def test_the_pruner_starts_judging_once_the_enqueued_plans_and_3_more_completed(cfg, pruner):
    """Judged against the recipes alone, a searched trial had to beat nearly the best of them."""
    cfg = with_study(cfg, pruner=pruner, prune_after=0.2)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 10})})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg, initial_design=4))
    judged = []
    for n in range(9):
        trial = study.ask()
        trial.report(0.9 if n % 2 else 0.1, step=5)  # every other trial hopeless
        judged.append(trial.should_prune())
        study.tell(trial, 0.9)
    assert judged.index(True) == 8  # the first hopeless trial after 4 + 3 completed ones


def test_tpe_starts_modelling_after_the_enqueued_plans(cfg):
    """The baselines and the probe's prior, then 3 random trials, are TPE's start-up; without
    them, 5 random trials."""
    study = open_study(cfg)
    for name in ("linear_probe", "lp_ft"):
        study.enqueue_trial({"boundary": 1}, user_attrs={records.BASELINE: name})
    study.enqueue_trial({"boundary": 2}, user_attrs={records.PRIOR: "probe_k2"})
    study.enqueue_trial({"boundary": 3}, user_attrs={records.RETRY_OF: 0})  # not a new point
    design = records.initial_design(study.get_trials(deepcopy=False))
    assert design == 3
    assert make_sampler(cfg, "s", 9)._n_startup_trials == 9 + 3  # then 3 random ones
    assert make_sampler(cfg, "s", design)._n_startup_trials == 3 + 3
    assert make_sampler(cfg, "s", 0)._n_startup_trials == 5


def test_records_read_a_trials_attrs_and_default_when_it_has_none():
    """The readers of :mod:`autofreeze.study.records` on a stored trial and on a bare one."""
    history = [{"epoch": 1, "phase": "static", "val_accuracy": 0.5}]
    recorded = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=0.5,
        user_attrs={
            records.HISTORY: history,
            records.BLOCKS: ["stem", "layer1", "layer2"],
            records.SECONDS: 12.5,
            records.CACHE: {"kind": "pooled", "boundary": 3, "source": "memory"},
            records.TRAINABLE_PARAMS: 10.0,
            records.RETRY_OF: 0,
            records.SEED: 7,
        },
    )
    assert records.history(recorded) == history
    assert records.blocks(recorded) == ["stem", "layer1", "layer2"]
    assert records.n_blocks(recorded) == 3
    assert records.seconds(recorded) == records.seconds(recorded, 0.0) == 12.5
    assert records.cache_kind(recorded) == "pooled"
    assert records.cost(recorded) == {
        records.SECONDS: 12.5,
        records.EXAMPLES_PER_SECOND: None,
        records.TRAINABLE_PARAMS: 10.0,
        records.PEAK_MEMORY_MB: None,
    }
    assert records.retry_of(recorded) == 0 and records.is_retry(recorded)  # trial 0 is a retry
    assert records.seed(recorded, 1) == 7

    bare = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5)
    assert records.history(bare) == [] and records.phase_events(bare) == []
    assert records.blocks(bare) is None and records.n_blocks(bare) is None
    assert records.seconds(bare) is None and records.seconds(bare, 0.0) == 0.0
    assert records.cache(bare) is None and records.cache_kind(bare) is None
    assert records.cost(bare) == dict.fromkeys(records.COST)
    assert records.frozen_fraction(bare) is None and records.frozen_blocks(bare) is None
    assert records.pruned_at_epoch(bare) is None and records.plan(bare) == {}
    assert records.retry_of(bare) is None and not records.is_retry(bare)
    assert records.seed(bare, 1) == 1 and records.seed(bare) is None
    empty = optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=0.5, user_attrs={records.BLOCKS: []}
    )
    assert records.n_blocks(empty) is None  # no blocks recorded is no count


def test_records_read_a_studys_config_choice_and_probe(cfg):
    study = open_study(cfg)
    assert not records.has_config(study) and records.config(study) is None
    assert records.config_dir(study) == "." and records.metric_of(study) is None
    assert records.choice(study) is None and records.probe(study) is None
    store_config(study, cfg)
    assert records.has_config(study) and records.config(study)["study"]["name"] == "s"
    assert records.config_dir(study) == str(cfg.base_dir)
    assert records.metric_of(study) == cfg.study.metric
    study.set_user_attr(records.CHOICE, {"trial": 0, "mean": 0.5})
    study.set_user_attr(records.PROBE, {"boundary": 2})
    assert records.choice(study)["trial"] == 0 and records.probe(study) == {"boundary": 2}
