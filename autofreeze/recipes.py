"""The textbook recipes: six freeze plans everyone tries by hand, with their names and words.

Torch-free, beside :mod:`autofreeze.plan`: the search enqueues them as its first trials
(:mod:`autofreeze.search.baselines`, moved into the search space), and the stories, tables and
report of :mod:`autofreeze.review` name them.
"""

from __future__ import annotations

from autofreeze.plan import FreezePlan

BASELINE_NAMES = (
    "linear_probe",
    "full_finetune_low_lr",
    "freeze_first_half",
    "gradual_unfreezing",
    "lp_ft",
    "from_scratch",
)

# each recipe in words, for the notes and the report
RECIPE_WORDS = {
    "linear_probe": "linear probe: every block frozen, the head trains",
    "full_finetune_low_lr": "full fine-tuning with the backbone at a tenth of the head's LR",
    "freeze_first_half": "the first half of the blocks frozen, the rest fine-tuned",
    "gradual_unfreezing": "gradual unfreezing (ULMFiT): one more block from the head each epoch",
    "lp_ft": "linear probe, then fine-tune (LP-FT) at a lower LR",
    "from_scratch": "random initialisation, every block trains (no transfer)",
}


def recipes(n_blocks: int, epochs: int) -> dict[str, FreezePlan]:
    """The recipes for a backbone of ``n_blocks`` blocks trained for ``epochs`` epochs."""
    common = {"layer_decay": 1.0, "weight_decay": 0.05, "bn_mode": "eval"}
    return {
        "linear_probe": FreezePlan(boundary=n_blocks, head_lr=1e-2, **common),
        "full_finetune_low_lr": FreezePlan(
            boundary=0, head_lr=1e-3, backbone_lr_ratio=0.1, **common
        ),
        "freeze_first_half": FreezePlan(
            boundary=n_blocks // 2, head_lr=3e-3, backbone_lr_ratio=0.3, **common
        ),
        "gradual_unfreezing": FreezePlan(
            boundary=0,
            schedule="gradual",
            schedule_params={"every": 1},
            head_lr=3e-3,
            backbone_lr_ratio=0.3,
            **common,
        ),
        "lp_ft": FreezePlan(
            boundary=0,
            schedule="lp_ft",
            schedule_params={"lp_epochs": max(1, epochs // 2), "ft_lr_scale": 0.1},
            head_lr=1e-2,
            backbone_lr_ratio=1.0,
            **common,
        ),
        "from_scratch": FreezePlan(
            boundary=0, head_lr=3e-3, backbone_lr_ratio=1.0, init="scratch", **common
        ),
    }
