from __future__ import annotations

from autofreeze.schedules._base import Phase, Schedule


class Static(Schedule):
    name = "static"
    description = "blocks 0..k-1 frozen for the whole run, everything above trains"

    def phase(self, epoch: int) -> Phase:
        return Phase(self.boundary, 1.0, "static")
