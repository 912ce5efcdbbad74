"""The textbook recipes (:mod:`autofreeze.recipes`) enqueued as the first trials of every study
(``[study] baselines``), and the probe's plans after them.

Each recipe is a freeze plan the search space can express: its structure (boundary, schedule,
init) must lie in the space, or the recipe is skipped; its numbers are moved into the space's
ranges (:meth:`autofreeze.search.space.SearchSpace.clamp`).
"""

from __future__ import annotations

import optuna

from autofreeze.plan import FreezePlan
from autofreeze.progress import Progress
from autofreeze.recipes import BASELINE_NAMES, recipes
from autofreeze.search.space import SearchSpace
from autofreeze.study import records

__all__ = ["BASELINE_NAMES", "baseline_plans", "enqueue_baselines", "enqueue_plans"]


def baseline_plans(space: SearchSpace, n_blocks: int, epochs: int) -> list[tuple[str, FreezePlan]]:
    """The recipes moved into ``space``, in :data:`BASELINE_NAMES` order; those outside skipped."""
    out = []
    for name, plan in recipes(n_blocks, epochs).items():
        clamped = space.clamp(plan)
        if clamped is not None:
            out.append((name, clamped))
    return out


def enqueue_baselines(
    study: optuna.Study, space: SearchSpace, n_blocks: int, epochs: int, progress: Progress
) -> None:
    """The textbook recipes as the first trials, once per study."""
    if study.get_trials(deepcopy=False):
        return
    enqueue_plans(study, space, baseline_plans(space, n_blocks, epochs), records.BASELINE, progress)


def enqueue_plans(
    study: optuna.Study,
    space: SearchSpace,
    plans: list[tuple[str, FreezePlan]],
    attr: str,
    progress: Progress,
) -> None:
    """Named plans, moved into the space (those outside it skipped), as the next trials."""
    queued = [(name, c) for name, plan in plans if (c := space.clamp(plan)) is not None]
    for name, clamped in queued:
        study.enqueue_trial(clamped.to_params(), user_attrs={attr: name})
    if queued:  # one line for them all
        progress(f"enqueued {attr} {', '.join(name for name, _ in queued)}")
