from __future__ import annotations

import math
from typing import Any

from autofreeze.schedules._base import Budget, Knob, Phase, Schedule


def _two_checks_before_the_end(b: Budget) -> tuple[float, float]:
    # a decision needs two measurements (epochs interval-1 and 2*interval-1) and acts from
    # epoch 2*interval on: a longer interval can never freeze anything
    return 1, max(1, (b.epochs - 1) // 2)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly between the two
    nearest ranks (``numpy.percentile``'s default)."""
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    a, b = ordered[low], ordered[high]
    return a if a == b or rank == low else a + (b - a) * (rank - low)


def change_rate(before: float, now: float) -> float:
    """``|now - before| / before``: how much a block's gradient norm moved between checks."""
    if now == before:
        return 0.0
    return abs(now - before) / before if before > 0 else math.inf


def frozen_prefix(first: int, rates: dict[int, float], q: float) -> int:
    """The new first trainable block: the longest run of blocks ``first, first+1, ...`` whose
    change rate is below the ``q``-th percentile of ``rates`` (the trainable blocks' rates) is
    frozen. The block with the largest rate is never below it, so one block always trains."""
    if not rates:
        return first
    threshold = percentile(list(rates.values()), q)
    while first in rates and rates[first] < threshold:
        first += 1
    return first


class AutoFreeze(Schedule):
    """AutoFreeze (Liu, Agarwal & Venkataraman, 2021, "AutoFreeze: Automatically Freezing Model
    Blocks to Accelerate Fine-tuning", arXiv:2102.01386).

    Every ``interval`` epochs, each trainable block's gradient norm over the interval is
    compared with the previous check's: the change rate is ``|g_now - g_before| / g_before``.
    The blocks from the first trainable one upward whose rate is below the ``percentile``-th
    percentile of the trainable blocks' rates, as one contiguous prefix, freeze from the next
    epoch on (a block freezes only when all blocks below it are frozen). The first decision needs
    two measurements; the boundary only moves forward; the head never freezes. This follows the
    reference code (github.com/YuhanLiu11/AutoFreeze, ``freeze_intermediate_e2e_lr.py``: the
    ratio, ``np.percentile`` over the layers from the current start layer, default
    ``--percentile 50``, the new start layer = the first whose ratio reaches it), with two
    differences: a block's norm here is ``sqrt(sum over the interval's steps of ||grad||^2)``
    (the reference sums the gradient tensors over the interval and takes the L1 norm of the
    sum, which needs a gradient-sized buffer per parameter), and the interval is counted in
    epochs rather than in iterations.
    """

    name = "autofreeze"
    freezes_forward = True  # the boundary only moves toward the head
    description = (
        "every `interval` epochs, freeze the blocks next to the boundary whose gradient norm "
        "changes less than the `percentile`-th percentile of the trainable blocks'"
    )
    knobs = (
        Knob(
            "interval",
            "int",
            1,
            low=1,
            high=10,
            help="epochs between two freezing decisions",
            useful=_two_checks_before_the_end,
        ),
        Knob(
            "percentile",
            "float",
            50.0,
            low=5.0,
            high=95.0,
            help="blocks whose gradient-norm change rate is below this percentile freeze",
        ),
    )
    wants_grad_norms = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first = self.boundary
        self.rates: list[dict[int, float]] = []  # the change rates of every decision, in order
        self._squares: dict[int, float] = {}  # squared norms summed over the current interval
        self._before: dict[int, float] | None = None

    def phase(self, epoch: int) -> Phase:
        first = self.clamp(self.first)
        return Phase(first, 1.0, f"autofreeze:{first - self.boundary}")

    def observe(self, epoch: int, grad_norms: dict[int, float]) -> None:
        for i, norm in grad_norms.items():
            if i >= self.first:
                self._squares[i] = self._squares.get(i, 0.0) + norm * norm
        if (epoch + 1) % self.params["interval"]:
            return
        now = {i: math.sqrt(s) for i, s in self._squares.items()}
        before, self._before, self._squares = self._before, now, {}
        if before is None:
            return
        rates = {i: change_rate(before[i], g) for i, g in sorted(now.items()) if i in before}
        self.rates.append(rates)
        self.first = max(self.first, frozen_prefix(self.first, rates, self.params["percentile"]))
