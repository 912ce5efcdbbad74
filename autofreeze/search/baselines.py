"""The reference plans enqueued as the first trials of every study (``[study] baselines``):
the shipped portfolio (:mod:`autofreeze.portfolio`), the textbook recipes
(:mod:`autofreeze.recipes`) or both (``[study] first_plans``), and the probe's plans after
them: as many as the budget runs (:func:`autofreeze.study.allowance.first_plans_room`), the
probe picking which.

Each is a freeze plan the search space can express: its structure (boundary, schedule, init)
must lie in the space, or the plan is skipped; its numbers are moved into the space's ranges
(:meth:`autofreeze.search.space.SearchSpace.clamp`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import optuna

from autofreeze.config import StudyConfig
from autofreeze.plan import FreezePlan
from autofreeze.portfolio import Member, members
from autofreeze.progress import Progress
from autofreeze.recipes import BASELINE_NAMES, recipes
from autofreeze.search.space import SearchSpace
from autofreeze.study import records

__all__ = [
    "BASELINE_NAMES",
    "baseline_plans",
    "enqueue_first",
    "first_plans",
    "portfolio_plans",
    "reference_plans",
]


# a recipe's head LR is at least this many times the space's floor (:func:`head_lr_floor`)
RECIPE_LR_FLOOR = 4.0


def fit_recipe_lr(plan: FreezePlan, floor: float | None) -> FreezePlan:
    """``plan`` with its head LR raised to :data:`RECIPE_LR_FLOOR` times ``floor`` where it is
    lower (the backbone's LR follows: its ratio is kept).

    The recipes' LRs (1e-3 to 1e-2) are the textbook's, for runs of thousands of steps. At the
    floor a head travels half its initial scale in the run, so a recipe near it barely leaves
    its random start in a short run: in the equal-time benchmark (6 to 48 steps a trial) the
    recipes at 1e-3 and 3e-3 sat at 0.1 to 3.3 times the floor, while the plans the vanilla loop
    chose had head LRs of 1.2 to 16 times it, median 5.8 (27 searches; docs/benchmarks.md,
    "Search quality").
    """
    if floor is None or plan.head_lr >= RECIPE_LR_FLOOR * floor:
        return plan
    return dataclasses.replace(plan, head_lr=RECIPE_LR_FLOOR * floor)


def baseline_plans(space: SearchSpace, n_blocks: int, epochs: int) -> list[tuple[str, FreezePlan]]:
    """The recipes, their head LR fitted to the run's steps (:func:`fit_recipe_lr`), moved into
    ``space``, in :data:`BASELINE_NAMES` order; those outside skipped."""
    out = []
    for name, plan in recipes(n_blocks, epochs).items():
        clamped = space.clamp(fit_recipe_lr(plan, space.lr_floor))
        if clamped is not None:
            out.append((name, clamped))
    return out


def portfolio_plans(
    space: SearchSpace, epochs: int, chosen: tuple[Member, ...] | None = None
) -> list[tuple[str, FreezePlan]]:
    """The portfolio's members (``chosen``, default the shipped ones) as plans of this run:
    the boundary a share of the space's blocks, the head LR a multiple of the space's floor
    (:attr:`SearchSpace.lr_floor`; absolute without one), epoch knobs a share of ``epochs``;
    moved into ``space``, in the portfolio's order; those outside skipped."""
    out = []
    for member in members() if chosen is None else chosen:
        plan = member.plan(space.n_blocks, epochs, space.lr_floor)
        clamped = space.clamp(plan)
        if clamped is not None:
            out.append((member.name, clamped))
    return out


def reference_plans(
    cfg: StudyConfig, space: SearchSpace, n_blocks: int, epochs: int
) -> tuple[list[tuple[str, FreezePlan]], list[tuple[str, FreezePlan]]]:
    """(recipes, portfolio members) that open a study as ``[study]`` asks: none without
    ``baselines``; else those ``first_plans`` names (:attr:`StudyConfig.first_plans`: unset,
    its default). A member that is a recipe already queued is not queued twice."""
    if not cfg.study.baselines:
        return [], []
    which = cfg.first_plans
    recipes = baseline_plans(space, n_blocks, epochs) if which != "portfolio" else []
    if which == "recipes":
        return recipes, []
    queued = [p for _, p in recipes]
    return recipes, [(n, p) for n, p in portfolio_plans(space, epochs) if p not in queued]


def first_plans(
    recipes: list[tuple[str, FreezePlan]],
    priors: list[tuple[str, FreezePlan]],
    probe_boundary: int | None,
    similar: bool,
    room: int | None,
    portfolio: Sequence[tuple[str, FreezePlan]] = (),
) -> list[tuple[str, str, FreezePlan]]:
    """The plans a study starts with, as ``(attr, name, plan)``: the portfolio's members, every
    recipe, then the probe's plans, when the budget runs them all (``room`` None or large
    enough).

    A smaller budget keeps ``room`` of them and the probe picks which: the plans nearest its
    boundary first (its own plans sit on it), the scratch reference last when the probe finds
    the source's features transfer, ties in the listed order (the portfolio's in the order it
    was chosen); without a probe, the listed order.
    """
    plans = (
        [(records.PORTFOLIO, n, p) for n, p in portfolio]
        + [(records.BASELINE, n, p) for n, p in recipes]
        + [(records.PRIOR, n, p) for n, p in priors]
    )
    if room is None or room >= len(plans):
        return plans
    if probe_boundary is not None:
        order = {id(p): i for i, (_, _, p) in enumerate(plans)}

        def rank(item: tuple[str, str, FreezePlan]) -> tuple[bool, int, int]:
            _, _, plan = item
            scratch_last = similar and plan.init == "scratch"
            return scratch_last, abs(plan.boundary - probe_boundary), order[id(plan)]

        plans = sorted(plans, key=rank)
    return plans[:room]


def enqueue_first(
    study: optuna.Study,
    space: SearchSpace,
    plans: list[tuple[str, str, FreezePlan]],
    progress: Progress,
) -> None:
    """The first plans, moved into the space (those outside it skipped), as the first trials."""
    queued: dict[str, list[str]] = {}
    for attr, name, plan in plans:
        clamped = space.clamp(plan)
        if clamped is not None:
            study.enqueue_trial(clamped.to_params(), user_attrs={attr: name})
            queued.setdefault(attr, []).append(name)
    for attr, names in queued.items():  # one line per kind
        progress(f"enqueued {attr} {', '.join(names)}")
