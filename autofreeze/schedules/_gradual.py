from __future__ import annotations

from autofreeze.schedules._base import Budget, Knob, Phase, Schedule


def _reaches_the_boundary(b: Budget) -> tuple[float, float]:
    # one more block every `every` epochs: unfreezing must reach the lowest boundary in time,
    # else a slower plan only repeats a plan with a higher boundary
    return 1, max(1, (b.epochs - 1) // max(1, b.n_blocks - b.boundary))


class Gradual(Schedule):
    """ULMFiT's gradual unfreezing (Howard & Ruder, 2018)."""

    name = "gradual"
    description = (
        "head only first, then one more block from the head toward the input every `every` "
        "epochs, never past the boundary"
    )
    knobs = (
        Knob(
            "every",
            "int",
            1,
            low=1,
            high=10,
            help="epochs between two unfreezings",
            useful=_reaches_the_boundary,
        ),
    )

    def phase(self, epoch: int) -> Phase:
        unfrozen = epoch // self.params["every"]
        first = self.clamp(self.n_blocks - unfrozen)
        return Phase(first, 1.0, f"gradual:{self.n_blocks - first}")
