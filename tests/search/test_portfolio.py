"""The shipped portfolio of first plans: members relative to the backbone's depth and the run's
head-LR floor, the data the package ships, and a real study opened by them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from autofreeze import portfolio
from autofreeze.cli import cli
from autofreeze.config import SearchSection, load_config
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry
from autofreeze.portfolio import Member
from autofreeze.progress import quiet
from autofreeze.recipes import BASELINE_NAMES
from autofreeze.search.baselines import first_plans, portfolio_plans
from autofreeze.search.run import prepare_search
from autofreeze.search.space import SearchSpace, head_lr_floor
from autofreeze.study import records
from autofreeze.study.storage import load_existing_study
from tests.studies import write_study

REGISTRY = Registry()
MEMBER = Member(
    name="m",
    depth=0.6,
    head_lr_floors=5.0,
    head_lr=3e-3,
    schedule="lp_ft",
    schedule_params={"ft_lr_scale": 0.2},
    epoch_shares={"lp_epochs": 0.5},
    backbone_lr_ratio=0.3,
)


def space(n_blocks: int, epochs: int = 6, floor: float | None = None) -> SearchSpace:
    return SearchSpace.from_config(SearchSection(), REGISTRY, n_blocks, epochs, floor)


@pytest.mark.parametrize(
    ("depth", "n_blocks", "boundary"),
    [
        (0.6, 5, 3),  # resnet10t's 5 blocks: 3 frozen
        (0.6, 12, 7),  # a 12-block ViT: 7.2 -> 7
        (0.0, 12, 0),  # full fine-tuning anywhere
        (1.0, 3, 3),  # the head alone anywhere
        (0.9, 2, 1),  # nearly all frozen, but a plan that trains blocks keeps one trainable
    ],
)
def test_the_boundary_is_a_share_of_the_backbones_depth(depth, n_blocks, boundary):
    member = Member(name="m", depth=depth, head_lr_floors=4.0, head_lr=1e-3)
    assert member.plan(n_blocks, 6, None).boundary == boundary


def test_the_head_lr_follows_the_runs_floor_and_is_absolute_without_one():
    short, longer = head_lr_floor(18, 512), head_lr_floor(48, 512)
    assert MEMBER.plan(5, 6, short).head_lr == pytest.approx(5.0 * short)
    assert MEMBER.plan(5, 6, longer).head_lr == pytest.approx(5.0 * longer)
    assert MEMBER.plan(5, 6, None).head_lr == 3e-3  # SGD, or fit_to_budget = false
    # thousands of steps: 5x the floor (4.4e-5) is far below anything the benchmark measured
    assert MEMBER.plan(5, 6, head_lr_floor(5000, 512)).head_lr == portfolio.HEAD_LR_LOW
    # moved into each run's space: a run of 6 steps raises the space's top (its floor 0.0074)
    ((_, in_short),) = portfolio_plans(space(5, 6, short), 6, (MEMBER,))
    ((_, tiny),) = portfolio_plans(space(5, 6, head_lr_floor(6, 512)), 6, (MEMBER,))
    assert in_short.head_lr == pytest.approx(5.0 * short)
    assert tiny.head_lr == pytest.approx(5.0 * head_lr_floor(6, 512))  # 0.037, above 3e-2


def test_epoch_knobs_are_a_share_of_the_runs_epochs_and_the_rest_as_they_are():
    assert MEMBER.plan(5, 6, None).schedule_params == {"ft_lr_scale": 0.2, "lp_epochs": 3}
    assert MEMBER.plan(5, 10, None).schedule_params["lp_epochs"] == 5
    assert MEMBER.plan(5, 1, None).schedule_params["lp_epochs"] == 1  # one epoch at least


def test_a_plan_and_its_member_round_trip_on_the_run_it_came_from():
    plan = FreezePlan(
        boundary=2,
        schedule="gradual",
        schedule_params={"every": 2},
        head_lr=0.0123,
        backbone_lr_ratio=0.25,
        layer_decay=0.8,
        weight_decay=0.01,
    )
    run = (5, 8, head_lr_floor(24, 512))
    member = Member.of_plan("x", plan, run, frozenset({"every"}), "somewhere")
    assert (member.depth, member.epoch_shares, member.origin) == (0.4, {"every": 0.25}, "somewhere")
    back = member.plan(*run)
    assert back.head_lr == pytest.approx(plan.head_lr, rel=1e-3)
    assert FreezePlan.from_dict({**back.to_dict(), "head_lr": plan.head_lr}) == plan


def test_the_shipped_portfolio_loads_and_every_member_maps_into_the_default_space():
    data = portfolio.load()
    members = data["members"]
    assert 4 <= len(members) <= 8
    assert [m.name for m in members] == [f"portfolio_{i}" for i in range(1, len(members) + 1)]
    assert "benchmarks/portfolio.py" in data["command"] and data["date"]
    assert portfolio.members() == tuple(members)
    for n_blocks in (5, 12):  # resnet10t; a ViT-B's 12 blocks
        for epochs, floor in ((6, head_lr_floor(18, 512)), (20, head_lr_floor(2000, 768))):
            for lr_floor in (floor, None):  # AdamW's floor; none (SGD, fit_to_budget = false)
                s = space(n_blocks, epochs, lr_floor)
                got = portfolio_plans(s, epochs)
                assert [n for n, _ in got] == [m.name for m in members]
                for (_, plan), member in zip(got, members, strict=True):
                    assert s.clamp(plan) == plan  # queued as it runs
                    assert plan.boundary == member.boundary(n_blocks)


def test_a_small_budget_keeps_the_members_the_probe_ranks_first():
    members = [("a", FreezePlan(boundary=0)), ("b", FreezePlan(boundary=4))]
    recipes = [("linear_probe", FreezePlan(boundary=5))]
    assert [n for _, n, _ in first_plans(recipes, [], None, False, None, members)] == [
        "a",
        "b",
        "linear_probe",
    ]
    kept = first_plans(recipes, [], 4, True, 2, members)
    assert [(a, n) for a, n, _ in kept] == [
        (records.PORTFOLIO, "b"),  # boundary 4: the probe's
        (records.BASELINE, "linear_probe"),  # boundary 5: next to it
    ]
    # no probe: the portfolio's own order, the order it was chosen in
    assert [n for _, n, _ in first_plans(recipes, [], None, False, 1, members)] == ["a"]


def _first(config):
    study = load_existing_study(f"sqlite:///{config.parent / 'tiny'}.db", "tiny")
    return study.get_trials()


@pytest.mark.slow  # a real study of 8 trainings: several seconds
def test_a_study_opens_with_the_portfolio_members_then_samples(tmp_path):
    config = write_study(tmp_path, n_trials=8, epochs=1, weights="none", first_plans="portfolio")
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert result.exit_code == 0, result.output
    trials = _first(config)
    names = [m.name for m in portfolio.members()]
    opened = trials[: len(names)]
    assert [t.user_attrs.get(records.PORTFOLIO) for t in opened] == names
    assert all(records.kind(t) == "portfolio" and records.baseline(t) is None for t in opened)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in opened)
    assert [records.name(t) for t in trials[len(names) :]] == [records.SEARCHED] * (8 - len(names))


@pytest.mark.parametrize(
    ("first", "baselines", "kinds"),
    [
        ("both", True, {"portfolio", "recipe"}),
        (None, True, {"portfolio", "recipe"}),  # unset: the default, both
        ("recipes", True, {"recipe"}),
        ("both", False, set()),  # baselines = false: no reference plan at all
    ],
)
def test_first_plans_and_baselines_say_which_reference_plans_are_queued(
    tmp_path, first, baselines, kinds
):
    extra = f"baselines = {str(baselines).lower()}"
    config = write_study(
        tmp_path, n_trials=40, weights="none", study_extra=extra, first_plans=first
    )
    study, _, _ = prepare_search(load_config(config), progress=quiet)
    queued = study.get_trials()
    assert {records.kind(t) for t in queued} == kinds
    assert all(t.state == TrialState.WAITING for t in queued)
    if "recipe" in kinds:
        assert [records.baseline(t) for t in queued if records.baseline(t)] == list(BASELINE_NAMES)


def test_an_unknown_first_plans_value_is_one_clear_line(tmp_path):
    config = write_study(tmp_path, first_plans="portfolios")
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert result.exit_code == 1, result.output
    assert "study.first_plans" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("first", "search", "resolved"),
    [
        (None, "", "both"),  # the default: the portfolio and the recipes
        (None, 'warm_start = { study = "earlier" }', "portfolio"),  # behind the warm plans
        ("recipes", 'warm_start = { study = "earlier" }', "recipes"),  # as given, always
        ("both", "", "both"),
    ],
)
def test_the_default_first_plans_are_what_measured_best_at_equal_wall_time(
    tmp_path, first, search, resolved
):
    """docs/benchmarks.md, "Warm start with the portfolio, side by side": the portfolio with
    the recipes beat the recipes alone, and a warm start followed by the portfolio reached the
    cold search's final test accuracy in half its time."""
    config = write_study(tmp_path, first_plans=first, search=search)
    cfg = load_config(config)
    assert cfg.study.first_plans == first and cfg.first_plans == resolved
