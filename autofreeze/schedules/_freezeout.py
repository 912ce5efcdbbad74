from __future__ import annotations

import math
from functools import cached_property

from autofreeze.schedules._base import Budget, Knob, Phase, Schedule


def _first_block_trains_an_epoch(b: Budget) -> tuple[float, float]:
    # below 1/epochs the first trainable block anneals to zero within epoch 0 and is frozen
    # from epoch 1 on: nearly the plan whose boundary is one block higher
    return min(0.9, 1.0 / max(1, b.epochs)), 0.9


class FreezeOut(Schedule):
    """FreezeOut (Brock, Lim, Ritchie & Weston, 2017, "FreezeOut: Accelerate Training by
    Progressively Freezing Layers", arXiv:1706.04983).

    Each trainable block has its own LR, annealed to zero on a cosine that ends at a staggered
    time ``t_i`` (a fraction of the run's optimizer steps); once at zero the block is frozen.
    The definitions follow the paper's reference code (github.com/ajbrock/FreezeOut,
    ``densenet.py``/``WRN.py`` and ``utils.scale_fn``): layer ``j`` of ``L`` layers gets
    ``t_j = scale(t_0' + (1 - t_0') * j / L)``, where the head is layer ``L`` (``t = 1``: it
    trains to the end), ``scale`` is the identity (``linear``) or ``x**3`` (``cubic``), and its
    LR is ``0.5 * lr_j * (1 + cos(pi * step / max_j))`` up to ``max_j = t_j * total steps``.
    Here the layers are the blocks ``k..n_blocks-1`` (``j = i - k``, ``L = n_blocks - k``) and
    the head. The knob ``t_0`` is the *first* block's freeze time: the code's ``t_0`` is
    "pre-cubed" under cubic scaling (its default 0.8 freezes the first layer at 0.512, the value
    the paper reports), so cubic uses ``t_0' = t_0 ** (1/3)`` and
    ``t_i = (t_0' + (1 - t_0') * j / L) ** 3``; linear uses ``t_i = t_0 + (1 - t_0) * j / L``.

    How it composes with the trainer: the per-block cosine *replaces* the trainer's global
    cosine for the blocks (:meth:`block_lr_scales`; the warmup ramp and the layer-wise planned
    LRs still apply); the head keeps the global schedule. The paper's optional LR scaling by
    ``1 / t_i`` (``scale_lr``) is not applied. The paper freezes per iteration; here a block
    whose ``t_i`` falls inside an epoch trains at LR 0 for the rest of that epoch and leaves the
    backward pass and the optimizer at the next epoch boundary: in epoch ``e`` the first
    trainable block is the first whose ``t_i`` is later than ``e / epochs``.
    """

    name = "freezeout"
    freezes_forward = True  # the boundary only moves toward the head
    description = (
        "each block's LR anneals to zero on its own cosine, ending at a staggered fraction of "
        "training (the first block at `t_0`, later blocks later); at zero the block freezes"
    )
    knobs = (
        Knob(
            "t_0",
            "float",
            0.5,
            low=0.1,
            high=0.9,
            help="fraction of training after which the first trainable block is frozen",
            useful=_first_block_trains_an_epoch,
        ),
        Knob(
            "scaling",
            "categorical",
            "linear",
            choices=("linear", "cubic"),
            help="how the freeze times rise from t_0 toward the head's 1.0",
        ),
    )

    @cached_property
    def freeze_times(self) -> dict[int, float]:
        """``t_i`` of each block ``boundary..n_blocks-1`` (the head's would be 1.0)."""
        t0, m = self.params["t_0"], self.n_blocks - self.boundary
        if self.params["scaling"] == "linear":
            times = [t0 + (1.0 - t0) * j / m for j in range(m)]
        else:
            c = t0 ** (1.0 / 3.0)
            times = [t0] + [(c + (1.0 - c) * j / m) ** 3 for j in range(1, m)]
        return {self.boundary + j: t for j, t in enumerate(times)}

    def phase(self, epoch: int) -> Phase:
        start = epoch / self.epochs
        times = self.freeze_times
        first = next((i for i, t in times.items() if t > start), self.n_blocks)
        first = self.clamp(first)
        return Phase(first, 1.0, f"freezeout:{first - self.boundary}")

    def block_lr_scales(self, progress: float) -> dict[int, float]:
        return {
            i: 0.5 * (1.0 + math.cos(math.pi * progress / t)) if progress < t else 0.0
            for i, t in self.freeze_times.items()
        }
