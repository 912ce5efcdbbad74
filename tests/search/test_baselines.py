"""The textbook recipes: what they are, and how a search space keeps, moves or skips them."""

from __future__ import annotations

from autofreeze.config import SearchSection
from autofreeze.plugins.registry import Registry
from autofreeze.search.baselines import BASELINE_NAMES, baseline_plans, recipes
from autofreeze.search.space import SearchSpace

REGISTRY = Registry()


def plans(n_blocks: int = 5, epochs: int = 8, **search) -> dict:
    space = SearchSpace.from_config(SearchSection.model_validate(search), REGISTRY, n_blocks)
    return dict(baseline_plans(space, n_blocks, epochs))


def test_the_default_space_runs_all_six_recipes_in_order():
    out = baseline_plans(
        SearchSpace.from_config(SearchSection(), REGISTRY, 5), n_blocks=5, epochs=8
    )
    assert tuple(name for name, _ in out) == BASELINE_NAMES
    got = dict(out)
    assert got == recipes(5, 8)  # the default ranges hold every recipe as written
    assert got["linear_probe"].boundary == 5 and got["freeze_first_half"].boundary == 2
    assert got["lp_ft"].schedule_params == {"lp_epochs": 4, "ft_lr_scale": 0.1}
    assert got["from_scratch"].init == "scratch"
    assert all(p.bn_mode == "eval" and p.layer_decay == 1.0 for p in got.values())


def test_recipes_the_space_cannot_express_are_skipped():
    assert set(plans(schedules=["static"])) == {
        "linear_probe",
        "full_finetune_low_lr",
        "freeze_first_half",
        "from_scratch",
    }
    assert "from_scratch" not in plans(init="pretrained")
    # boundary 1..3: only the half-frozen recipe lies inside
    assert set(plans(boundary=[1, 3])) == {"freeze_first_half"}


def test_numbers_are_clamped_into_the_space():
    got = plans(
        head_lr=[1e-4, 2e-3],
        weight_decay=0.0,
        bn_mode=["train", "frozen"],
        knobs={"lp_ft": {"lp_epochs": [1, 2], "ft_lr_scale": 0.5}, "gradual": {"every": 2}},
    )
    assert all(1e-4 <= p.head_lr <= 2e-3 for p in got.values())
    assert all(p.weight_decay == 0.0 and p.bn_mode == "train" for p in got.values())
    assert got["lp_ft"].schedule_params == {"lp_epochs": 2, "ft_lr_scale": 0.5}
    assert got["gradual_unfreezing"].schedule_params == {"every": 2}


def test_lp_phase_follows_the_epochs():
    assert recipes(5, 1)["lp_ft"].schedule_params["lp_epochs"] == 1
    assert recipes(5, 15)["lp_ft"].schedule_params["lp_epochs"] == 7
    assert recipes(12, 8)["freeze_first_half"].boundary == 6


def test_a_recipe_whose_head_lr_cannot_move_the_head_in_a_short_run_is_raised():
    from autofreeze.search.baselines import RECIPE_LR_FLOOR
    from autofreeze.search.space import head_lr_floor

    section = SearchSection()
    short = head_lr_floor(18, 512)  # 75 images, batch 25, 6 epochs: the benchmark's small task
    space = SearchSpace.from_config(section, REGISTRY, 5, 6, short)
    got = dict(baseline_plans(space, 5, 6))
    lifted = RECIPE_LR_FLOOR * short
    assert 0.009 < lifted < 0.01
    for name, plan in recipes(5, 6).items():
        expected = max(plan.head_lr, lifted)
        assert got[name].head_lr == expected, name
        assert got[name].backbone_lr_ratio == space.backbone_lr_ratio.clamp(plan.backbone_lr_ratio)
    assert got["linear_probe"].head_lr == 1e-2  # already above: as written
    # a long run (thousands of steps) keeps the textbook's LRs
    long = SearchSpace.from_config(section, REGISTRY, 5, 6, head_lr_floor(5000, 512))
    assert dict(baseline_plans(long, 5, 6)) == recipes(5, 6)
