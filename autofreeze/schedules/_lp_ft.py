from __future__ import annotations

from autofreeze.schedules._base import Budget, Knob, Phase, Schedule


def _shorter_than_training(b: Budget) -> tuple[float, float]:
    return 1, max(1, b.epochs - 1)  # at least one epoch of fine-tuning


def _still_trains(b: Budget) -> tuple[float, float]:
    # below 1% the fine-tuning LR is at most 3e-4 for the head (head_lr <= 3e-2 by default)
    # and less for the backbone: in a short budget the phase cannot move the weights
    return 0.01, 1.0


class LinearProbeFinetune(Schedule):
    """Linear probing then fine-tuning, LP-FT (Kumar et al., 2022)."""

    name = "lp_ft"
    description = "head only for `lp_epochs`, then train from the boundary at `ft_lr_scale` LRs"
    knobs = (
        Knob(
            "lp_epochs",
            "int",
            1,
            low=1,
            high=20,
            help="epochs of head-only training",
            useful=_shorter_than_training,
        ),
        Knob(
            "ft_lr_scale",
            "float",
            0.1,
            low=1e-3,
            high=1.0,
            log=True,
            help="LR multiplier of the fine-tuning phase",
            useful=_still_trains,
        ),
    )

    def phase(self, epoch: int) -> Phase:
        if epoch < self.params["lp_epochs"]:
            return Phase(self.n_blocks, 1.0, "linear_probe")
        return Phase(self.boundary, self.params["ft_lr_scale"], "finetune")
