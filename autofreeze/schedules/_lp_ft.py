from __future__ import annotations

from autofreeze.schedules._base import Knob, Phase, Schedule


class LinearProbeFinetune(Schedule):
    """Linear probing then fine-tuning, LP-FT (Kumar et al., 2022)."""

    name = "lp_ft"
    description = "head only for `lp_epochs`, then train from the boundary at `ft_lr_scale` LRs"
    knobs = (
        Knob("lp_epochs", "int", 1, low=1, high=20, help="epochs of head-only training"),
        Knob(
            "ft_lr_scale",
            "float",
            0.1,
            low=1e-3,
            high=1.0,
            log=True,
            help="LR multiplier of the fine-tuning phase",
        ),
    )

    def phase(self, epoch: int) -> Phase:
        if epoch < self.params["lp_epochs"]:
            return Phase(self.n_blocks, 1.0, "linear_probe")
        return Phase(self.boundary, self.params["ft_lr_scale"], "finetune")
