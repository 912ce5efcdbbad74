from __future__ import annotations

from autofreeze.schedules._base import Knob, Phase, Schedule


class Gradual(Schedule):
    """ULMFiT's gradual unfreezing (Howard & Ruder, 2018)."""

    name = "gradual"
    description = (
        "head only first, then one more block from the head toward the input every `every` "
        "epochs, never past the boundary"
    )
    knobs = (Knob("every", "int", 1, low=1, high=10, help="epochs between two unfreezings"),)

    def phase(self, epoch: int) -> Phase:
        unfrozen = epoch // self.params["every"]
        first = self.clamp(self.n_blocks - unfrozen)
        return Phase(first, 1.0, f"gradual:{self.n_blocks - first}")
