"""The search space: each [search] entry parsed once into a dimension, suggested from a trial."""

from __future__ import annotations

import math

import optuna
import pytest
from pydantic import ValidationError

from autofreeze.config import SearchSection
from autofreeze.errors import AutofreezeError, ConfigError, PlanError
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry
from autofreeze.schedules import Knob, Phase, Schedule
from autofreeze.search.space import (
    Choices,
    Fixed,
    Range,
    SearchSpace,
    head_lr_floor,
    knob_dimension,
)

REGISTRY = Registry()
EVERY = Knob("every", "int", 1, low=1, high=10)
SCALE = Knob("ft_lr_scale", "float", 0.1, low=1e-3, high=1.0, log=True)
MODE = Knob("mode", "categorical", "a", choices=("a", "b", "c"))


def space(n_blocks: int = 5, **search) -> SearchSpace:
    return SearchSpace.from_config(SearchSection.model_validate(search), REGISTRY, n_blocks)


@pytest.mark.parametrize(
    ("knob", "configured", "expected"),
    [
        (EVERY, None, Range(1, 10, integer=True)),
        (EVERY, 3, Fixed(3)),
        (EVERY, [2, 4], Range(2, 4, integer=True)),
        (EVERY, [2, 2], Fixed(2)),
        (SCALE, None, Range(1e-3, 1.0, log=True)),
        (SCALE, [0.01, 0.5], Range(0.01, 0.5, log=True)),
        (MODE, None, Choices(("a", "b", "c"))),
        (MODE, "b", Fixed("b")),
        (MODE, ["a", "c"], Choices(("a", "c"))),
        (MODE, ["c"], Fixed("c")),
    ],
)
def test_a_knob_is_parsed_once_into_a_dimension(knob, configured, expected):
    assert knob_dimension(knob, configured, "[search.knobs.x]") == expected


@pytest.mark.parametrize(
    ("knob", "configured", "error", "words"),
    [
        (EVERY, [0, 3], PlanError, "every=0 is outside"),
        (EVERY, 11, PlanError, "every=11 is outside"),
        (EVERY, [4, 2], ConfigError, "low <= high"),
        (EVERY, [1, 2, 3], ConfigError, "a range is [low, high]"),
        (MODE, [], ConfigError, "at least one choice"),
        (MODE, ["a", "z"], PlanError, "mode must be one of"),
    ],
)
def test_a_bad_knob_is_one_line_naming_it(knob, configured, error, words):
    with pytest.raises(error) as info:
        knob_dimension(knob, configured, "[search.knobs.x]")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_dimensions_clamp_and_contain():
    r = Range(1, 4, integer=True)
    assert (r.clamp(0), r.clamp(2.6), r.clamp(9)) == (1, 3, 4) and 2 in r and 5 not in r
    f = Range(0.01, 0.5)
    assert f.clamp(1.0) == 0.5 and isinstance(f.clamp(1), float)
    c = Choices(("b", "c"))
    # a two-element categorical list is never taken for a numeric range
    assert c.clamp("a") == "b" and c.clamp("c") == "c" and "a" not in c
    assert Fixed(3).clamp(99) == 3 and 3 in Fixed(3) and 4 not in Fixed(3)


def test_a_categorical_knob_of_a_plugin_schedule_is_clamped_by_choice():
    class Moded(Schedule):
        name = "moded"
        knobs = (MODE,)

        def phase(self, epoch: int) -> Phase:
            return Phase(self.boundary)

    from autofreeze.hookspecs import hookimpl

    class SchedulePlugin:
        @hookimpl
        def register_schedules(self, register):
            register(Moded)

    registry = Registry()
    with registry.plugin(SchedulePlugin(), name="moded-plugin"):
        section = SearchSection.model_validate(
            {"schedules": ["moded"], "knobs": {"moded": {"mode": ["b", "c"]}}}
        )
        s = SearchSpace.from_config(section, registry, 5)
        plan = FreezePlan(boundary=0, schedule="moded", schedule_params={"mode": "a"})
        assert s.clamp(plan).schedule_params == {"mode": "b"}


@pytest.mark.parametrize(
    ("search", "words"),
    [
        ({"schedules": ["static", "cosine"]}, "unknown schedule 'cosine'"),
        ({"schedules": ["static"], "knobs": {"gradual": {"every": 2}}}, "not in [search]"),
        ({"knobs": {"lp_ft": {"lp_epoch": 2}}}, "lp_epoch: unknown knob"),
        ({"boundary": [1, 9]}, "5 blocks"),
        ({"boundary": 6}, "allowed 0..5"),
    ],
)
def test_the_space_is_checked_against_the_plugins_and_the_backbone(search, words):
    with pytest.raises(AutofreezeError) as info:
        space(**search)
    assert words in str(info.value)


PARAMS = {
    "boundary": 2,
    "schedule": "lp_ft",
    "lp_ft.lp_epochs": 3,
    "lp_ft.ft_lr_scale": 0.2,
    "head_lr": 1e-3,
    "backbone_lr_ratio": 0.5,
    "layer_decay": 0.8,
    "weight_decay": 0.01,
    "init": "scratch",
}


def test_suggest_reads_a_trial_and_round_trips_through_params():
    plan = space().suggest(optuna.trial.FixedTrial(PARAMS))
    assert plan.schedule_params == {"lp_epochs": 3, "ft_lr_scale": 0.2}
    assert plan.bn_mode == "eval"  # fixed by default: in the plan, never asked of the trial
    assert plan.to_params() == {**PARAMS, "bn_mode": "eval"}
    assert FreezePlan.from_params(plan.to_params()) == plan


def test_only_the_chosen_schedules_knobs_are_suggested():
    s = space()
    static = s.suggest(optuna.trial.FixedTrial({**PARAMS, "schedule": "static"}))
    assert static.schedule_params == {}
    with pytest.raises(ValueError, match="gradual.every"):  # FixedTrial lacks it: it was asked
        s.suggest(optuna.trial.FixedTrial({**PARAMS, "schedule": "gradual"}))


def test_fixed_entries_are_never_asked():
    s = space(boundary=3, schedules="static", head_lr=0.01, init="pretrained", bn_mode="train")
    plan = s.suggest(
        optuna.trial.FixedTrial({"backbone_lr_ratio": 0.1, "layer_decay": 1.0, "weight_decay": 0.0})
    )
    assert (plan.boundary, plan.schedule, plan.head_lr, plan.init, plan.bn_mode) == (
        3,
        "static",
        0.01,
        "pretrained",
        "train",
    )


def test_sampled_plans_stay_inside_every_range():
    s = space(
        boundary=[1, 3],
        head_lr=[1e-3, 1e-2],
        layer_decay=[0.7, 0.9],
        knobs={"gradual": {"every": [2, 3]}, "lp_ft": {"ft_lr_scale": [0.1, 0.3]}},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        plan = s.suggest(study.ask())
        plan.check(5)
        assert 1 <= plan.boundary <= 3 and 1e-3 <= plan.head_lr <= 1e-2
        assert 0.7 <= plan.layer_decay <= 0.9
        if plan.schedule == "gradual":
            assert plan.schedule_params["every"] in (2, 3)
        if plan.schedule == "lp_ft":
            assert 0.1 <= plan.schedule_params["ft_lr_scale"] <= 0.3


def test_plan_limits_are_defined_once_and_checked():
    with pytest.raises(PlanError, match="a plan needs a boundary"):
        FreezePlan.from_params({"head_lr": 0.1})
    for field, value in (
        ("head_lr", 0.0),
        ("layer_decay", 1.5),
        ("weight_decay", -1),
        ("backbone_lr_ratio", math.nan),
        ("head_lr", math.inf),
    ):
        with pytest.raises(PlanError, match=field):
            FreezePlan(boundary=0, **{field: value}).check(5)
    with pytest.raises(ValidationError, match=r"layer_decay[\s\S]*must be in \(0, 1\]"):
        SearchSection.model_validate({"layer_decay": [0.5, 2.0]})


def budget_space(epochs: int, n_blocks: int = 5, **search) -> SearchSpace:
    section = SearchSection.model_validate(search)
    return SearchSpace.from_config(section, REGISTRY, n_blocks, epochs)


@pytest.mark.parametrize(
    ("epochs", "n_blocks", "search", "every", "lp_epochs"),
    [
        (8, 5, {}, Fixed(1), Range(1, 7, integer=True)),  # 5 unfreezings need 5+ epochs
        (16, 5, {}, Range(1, 3, integer=True), Range(1, 15, integer=True)),
        (16, 5, {"boundary": [2, 5]}, Range(1, 5, integer=True), Range(1, 15, integer=True)),
        (1, 5, {}, Fixed(1), Fixed(1)),  # one epoch: no room for a second phase
        (40, 2, {}, Range(1, 10, integer=True), Range(1, 20, integer=True)),  # declared caps
    ],
)
def test_knob_ranges_follow_the_epochs_and_the_blocks(epochs, n_blocks, search, every, lp_epochs):
    s = budget_space(epochs, n_blocks, **search)
    assert s.knobs["gradual"]["every"] == every
    assert s.knobs["lp_ft"]["lp_epochs"] == lp_epochs
    assert s.knobs["lp_ft"]["ft_lr_scale"] == Range(0.01, 1.0, log=True)  # LR scales that train
    assert s.notes == ()


def test_configured_ranges_beyond_the_budget_are_clamped_with_a_note():
    s = budget_space(
        8, knobs={"lp_ft": {"lp_epochs": [2, 20], "ft_lr_scale": 0.001}, "gradual": {"every": 3}}
    )
    assert s.knobs["lp_ft"]["lp_epochs"] == Range(2, 7, integer=True)
    assert s.knobs["lp_ft"]["ft_lr_scale"] == Fixed(0.01)
    assert s.knobs["gradual"]["every"] == Fixed(1)
    assert len(s.notes) == 3
    assert any("lp_epochs = [2, 20]" in n and "only 1..7" in n and "[2, 7]" in n for n in s.notes)
    assert all("with 8 epochs and 5 blocks" in n for n in s.notes)
    # a range inside the useful one is kept as written, without a note
    assert budget_space(8, knobs={"lp_ft": {"lp_epochs": [1, 4]}}).notes == ()


def test_the_head_lr_is_searched_only_where_the_head_can_move():
    # 24 AdamW steps of a 512-input head: below 1/(sqrt(512) * 24) = 1.84e-3 it stays put
    floor = head_lr_floor(24, 512)
    assert floor == pytest.approx(1.84e-3, rel=0.01)
    assert head_lr_floor(10_000, 2048) < 1e-4  # a real budget: the default range is kept
    search = SearchSection.model_validate({"head_lr": [1e-4, 3e-2]})
    s = SearchSpace.from_config(search, REGISTRY, 5, 8, head_lr_floor=floor)
    assert s.head_lr == Range(floor, 3e-2, log=True)
    assert any("[search] head_lr = [0.0001, 0.03]" in n and "[0.0018, 0.03]" in n for n in s.notes)
    fixed = SearchSection.model_validate({"head_lr": 1e-4})  # a fixed value is the user's call
    assert SearchSpace.from_config(fixed, REGISTRY, 5, 8, head_lr_floor=floor).head_lr == Fixed(
        1e-4
    )
    # 6 steps (the benchmark's few-label task): the floor 7.4e-3 leaves a span of 4 below the
    # top; the top moves up to keep a decade, and the note says so
    six = head_lr_floor(6, 512)
    s = SearchSpace.from_config(search, REGISTRY, 5, 8, head_lr_floor=six)
    assert s.head_lr == Range(six, 10 * six, log=True)
    assert any("top raised to keep a 10x span" in n and "[0.0074, 0.074]" in n for n in s.notes)
    narrow = SearchSection.model_validate({"head_lr": [1e-5, 1e-4]})  # all below: the top
    s = SearchSpace.from_config(narrow, REGISTRY, 5, 8, head_lr_floor=floor)
    assert s.head_lr == Fixed(1e-4)


ALL_SCHEDULES = ["static", "gradual", "lp_ft", "freezeout", "autofreeze"]


def conditional_space(**search) -> SearchSpace:
    search = {"schedules": ALL_SCHEDULES, "bn_mode": ["eval", "train", "frozen"], **search}
    return budget_space(12, **search)


def sampled(s: SearchSpace, n: int, sampler: optuna.samplers.BaseSampler) -> list:
    """``n`` plans of a real in-memory study, each told, with the params the trial was asked."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        plan = s.suggest(trial)
        study.tell(trial, (i * 0.37) % 1.0)
        out.append((plan, study.trials[-1].params))
    return out


def test_no_sampled_plan_contradicts_itself_and_every_choice_still_appears():
    s = conditional_space()
    plans = sampled(s, 300, optuna.samplers.RandomSampler(seed=0))
    for plan, params in plans:
        plan.check(5)
        if plan.boundary == 5:  # every block frozen: a linear probe of pretrained features
            assert (plan.schedule, plan.schedule_params, plan.init) == ("static", {}, "pretrained")
            assert set(params) == {"boundary", "head_lr", "weight_decay", "bn_mode"}
            assert (plan.backbone_lr_ratio, plan.layer_decay) == (0.1, 1.0)  # in no LR
        else:
            assert {"schedule", "init", "backbone_lr_ratio"} <= set(params)
        assert ("layer_decay" in params) == (plan.boundary <= 3)  # a second block to decay to
        no_frozen_block = plan.boundary == 0 and plan.schedule == "static"
        assert ("bn_mode" in params) != no_frozen_block
    assert {p.boundary for p, _ in plans} == set(range(6))
    assert {p.schedule for p, _ in plans} == set(ALL_SCHEDULES)
    assert {p.init for p, _ in plans} == {"pretrained", "scratch"}
    assert {p.bn_mode for p, _ in plans} == {"eval", "train", "frozen"}
    for schedule in ALL_SCHEDULES[1:]:  # every unfreezing schedule also at the edges it allows
        assert {p.boundary for p, _ in plans if p.schedule == schedule} == set(range(5))
    assert any(p.boundary == 4 and p.init == "scratch" for p, _ in plans)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_tpe_as_autofreeze_configures_it_samples_the_conditional_space():
    s = conditional_space()
    sampler = optuna.samplers.TPESampler(
        seed=1, multivariate=True, group=True, n_startup_trials=10, constant_liar=True
    )
    for plan, _ in sampled(s, 40, sampler):
        assert plan.boundary < 5 or (plan.schedule, plan.init) == ("static", "pretrained")


def test_a_plan_that_contradicts_itself_is_outside_the_space():
    s = conditional_space()
    assert s.clamp(FreezePlan(boundary=5, init="scratch")) is None
    assert s.clamp(FreezePlan(boundary=5, schedule="lp_ft")) is None
    assert s.clamp(FreezePlan(boundary=5, schedule="gradual")) is None
    # what cannot change training moves to the value the space fixes there
    probe = s.clamp(FreezePlan(boundary=5, backbone_lr_ratio=0.3, layer_decay=0.6))
    assert (probe.backbone_lr_ratio, probe.layer_decay) == (0.1, 1.0)
    assert s.clamp(FreezePlan(boundary=4, layer_decay=0.6)).layer_decay == 1.0
    assert s.clamp(FreezePlan(boundary=3, layer_decay=0.6)).layer_decay == 0.6
    assert s.clamp(FreezePlan(boundary=0, bn_mode="train")).bn_mode == "eval"
    assert s.clamp(FreezePlan(boundary=0, schedule="gradual", bn_mode="train")).bn_mode == "train"


@pytest.mark.parametrize(
    "search",
    [
        {},
        {"schedules": ["gradual", "lp_ft"]},  # no static: a head-only plan is static all the same
        {"bn_mode": ["train", "frozen"], "layer_decay": [0.6, 0.9]},
        {"boundary": [0, 4], "init": "pretrained", "backbone_lr_ratio": [0.2, 0.5]},
        {"augment": ["flip", "crop"], "knobs": {"lp_ft": {"lp_epochs": [2, 3]}}},
    ],
)
def test_every_recipe_and_prior_clamped_and_enqueued_runs_exactly_its_plan(search):
    from autofreeze.search.baselines import baseline_plans

    s = conditional_space(**search)
    named = baseline_plans(s, 5, 12)
    priors = [FreezePlan(boundary=k, head_lr=3e-3, backbone_lr_ratio=0.3) for k in range(6)]
    named += [(f"probe_k{p.boundary}", c) for p in priors if (c := s.clamp(p)) is not None]
    assert len(named) >= 4  # without static: 3 recipes and the head-only prior
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _, plan in named:
        study.enqueue_trial(plan.to_params())
    for name, plan in named:
        trial = study.ask()
        assert s.suggest(trial) == plan, name
        study.tell(trial, 0.5)


def test_the_linear_probe_recipe_runs_where_static_is_not_listed():
    from autofreeze.search.baselines import baseline_plans

    got = dict(baseline_plans(conditional_space(schedules=["gradual"]), 5, 12))
    assert set(got) == {"linear_probe", "gradual_unfreezing"}
    assert got["linear_probe"].schedule == "static"


def test_a_scratch_only_space_never_trains_a_head_on_random_frozen_blocks():
    s = space(init="scratch")
    assert s.boundary == Range(0, 4, integer=True)
    assert any('init = "scratch"' in n and "boundary 0..4" in n for n in s.notes)
    with pytest.raises(ConfigError, match="random features"):
        space(init="scratch", boundary=5)
    assert space(init="scratch", boundary=[1, 3]).notes == ()


def test_a_study_begun_by_the_unconditional_space_resumes():
    # before the space was conditional every trial had every parameter, also a head-only
    # trial with a schedule and init that contradicted it; its plan is in its user attrs
    s = conditional_space()
    old = FreezePlan(boundary=5, schedule="lp_ft", schedule_params={"lp_epochs": 2}, init="scratch")
    dists = {
        "boundary": optuna.distributions.IntDistribution(0, 5),
        "schedule": optuna.distributions.CategoricalDistribution(ALL_SCHEDULES),
        "lp_ft.lp_epochs": optuna.distributions.IntDistribution(1, 11),
        "init": optuna.distributions.CategoricalDistribution(["pretrained", "scratch"]),
        "backbone_lr_ratio": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
    }
    params = {k: v for k, v in old.to_params().items() if k in dists}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=dists, value=0.4, user_attrs={"plan": old.to_dict()}
        )
    )
    for _ in range(30):
        trial = study.ask()
        s.suggest(trial)  # the same names and choices: Optuna accepts them
        study.tell(trial, 0.5)
    from autofreeze.study import records

    assert FreezePlan.from_dict(records.plan(study.trials[0])) == old


def test_the_first_sampled_trials_search_the_core_and_their_plans_re_run_exactly():
    from autofreeze.search.space import CORE

    s = budget_space(12)  # every [search] entry at its default
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    narrow = []
    for i in range(60):
        trial = study.ask()
        narrow.append(s.suggest(trial, wide=False))
        study.tell(trial, (i * 0.37) % 1.0)
        assert set(study.trials[-1].params) <= set(CORE)
    assert {p.boundary for p in narrow} == set(range(6))
    for plan in narrow:  # the user's own loop: static, pretrained, no decay, eval
        assert (plan.schedule, plan.init, plan.layer_decay) == ("static", "pretrained", 1.0)
        assert (plan.weight_decay, plan.bn_mode, plan.augment) == (0.05, "eval", None)
        # a re-run asks a FixedTrial of the whole plan, in the whole space: the same plan
        fixed = optuna.trial.FixedTrial(plan.to_params())
        assert s.suggest(fixed, wide=True) == plan
    wide = sampled(s, 60, optuna.samplers.RandomSampler(seed=4))
    assert {p.schedule for p, _ in wide} == {"static", "gradual", "lp_ft"}
    assert any({"schedule", "init", "weight_decay"} <= set(params) for _, params in wide)
    # what [search] names is searched from the first trial: here the schedules and bn_mode
    named = conditional_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    asked = set()
    for _ in range(40):
        trial = study.ask()
        named.suggest(trial, wide=False)
        study.tell(trial, 0.5)
        asked |= set(study.trials[-1].params)
    assert {"schedule", "bn_mode"} <= asked and not {"init", "layer_decay"} & asked


def test_a_trial_is_asked_the_whole_space_after_the_core_trials_or_as_it_was_queued():
    from autofreeze.search.baselines import baseline_plans
    from autofreeze.search.objective import Objective
    from autofreeze.study import records

    s = budget_space(12)
    assert s.core_trials == 10  # [search] core_trials' default
    wide = Objective.__new__(Objective)  # _wide reads the space alone
    wide.space = s
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    recipe = dict(baseline_plans(s, 5, 12))["gradual_unfreezing"]
    study.enqueue_trial(recipe.to_params(), user_attrs={records.BASELINE: "gradual_unfreezing"})
    core = {"boundary": 3, "head_lr": 0.01, "backbone_lr_ratio": 0.5}
    study.enqueue_trial(core)  # a retry of a trial the sampler asked in the narrow space
    first, second = study.ask(), study.ask()
    assert wide._wide(first) and s.suggest(first, wide=True) == recipe
    assert not wide._wide(second)
    assert s.suggest(second, wide=False).to_params().items() >= core.items()
    study.tell(first, 0.5)
    study.tell(second, 0.5)
    for n in range(s.core_trials + 1):  # the sampler's own trials, finished
        trial = study.ask()
        assert wide._wide(trial) == (n >= s.core_trials)
        s.suggest(trial, wide=wide._wide(trial))
        study.tell(trial, 0.4)
    assert s.searches_wide(recipe.to_params(), 0) and not s.searches_wide(core, 99)
    assert budget_space(12, core_trials=0).searches_wide(None, 0)
    # a retry of a narrow trial whose schedule [search] names is narrow all the same
    assert not conditional_space().searches_wide(
        {**core, "schedule": "gradual", "gradual.every": 2}, 0
    )
