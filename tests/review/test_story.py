"""A trial and a study in words, from their records alone (no torch, no training)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autofreeze.review import story, study_story
from autofreeze.study import records

BLOCKS = ["stem", "s1", "s2", "s3"]


def epoch(n, first, cached=0, lrs=None, phase="static", acc=0.5):
    return {
        "epoch": n,
        "phase": phase,
        "val_accuracy": acc,
        "val_loss": 1.0,
        "train_loss": 1.0,
        "trainable_from": first,
        "cached": cached,
        "lrs": lrs or {},
    }


def trial(plan, history, value=0.5, state=TrialState.COMPLETE, **attrs):
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        user_attrs={records.PLAN: plan, records.HISTORY: history, records.BLOCKS: BLOCKS, **attrs},
    )


GRADUAL = {
    "boundary": 1,
    "schedule": "gradual",
    "schedule_params": {"every": 1},
    "head_lr": 0.01,
    "backbone_lr_ratio": 0.3,
    "layer_decay": 0.8,
    "bn_mode": "train",
}


def test_the_freeze_map_follows_each_epoch_of_the_history():
    history = [
        epoch(1, 4, cached=4, lrs={"head": 0.01}),
        epoch(2, 3, cached=3, lrs={"head": 0.01, "block3": 0.003}),
        epoch(3, 2, lrs={"head": 0.01, "block3": 0.003, "block2": 0.0024}),
    ]
    fm = story.freeze_map(trial(GRADUAL, history))
    assert fm.blocks == [*BLOCKS, "head"] and fm.epochs == [1, 2, 3]
    assert fm.cells[0] == ["cached", "cached", "frozen"]  # frozen throughout; cached while below
    assert fm.cells[2] == ["cached", "cached", "training"]
    assert fm.cells[3] == ["cached", "training", "training"]
    assert fm.lrs[3] == [None, 0.003, 0.003] and fm.lrs[4] == [0.01, 0.01, 0.01]
    assert fm.bn_mode == "train"
    text = story.freeze_map_markdown(fm)
    assert "| s3 | cached | 0.003 | 0.003 |" in text and "BatchNorm `train`" in text


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({"boundary": 4, "schedule": "static"}, "all 4 blocks frozen (head only) throughout"),
        ({"boundary": 1, "schedule": "static"}, "block 0 of 4 frozen throughout"),
        ({"boundary": 2, "schedule": "static"}, "blocks 0-1 of 4 frozen throughout"),
        (GRADUAL, "one block unfrozen every 1 epoch down to block 1"),
        (
            {
                "boundary": 0,
                "schedule": "lp_ft",
                "schedule_params": {"lp_epochs": 2, "ft_lr_scale": 0.1},
            },
            "head only for 2 epochs, then fine-tune from block 0 at 0.1x",
        ),
    ],
)
def test_a_plan_in_words(plan, words):
    assert words in story.plan_words({"head_lr": 0.01, **plan}, n_blocks=4)


def test_a_head_only_plan_does_not_talk_about_the_backbone_lr():
    text = story.plan_words({"boundary": 4, "head_lr": 0.01, "backbone_lr_ratio": 0.1}, 4)
    assert "backbone" not in text
    assert "backbone at 0.3x with layer decay 0.8" in story.plan_words(GRADUAL, 4)


def test_outcomes_name_why_a_trial_stopped():
    pruned = trial(GRADUAL, [epoch(1, 3)], state=TrialState.PRUNED, **{records.PRUNED_AT_EPOCH: 6})
    failed = trial(GRADUAL, [], state=TrialState.FAIL, **{records.FAIL_REASON: "out of memory"})
    assert story.outcome(pruned, "val_accuracy").startswith("pruned at epoch 6")
    assert story.outcome(failed, "val_accuracy") == "failed: out of memory"
    assert "**failed: out of memory**" in story.trial_note(failed, "val_accuracy")


def test_the_study_note_gives_the_best_plan_its_lead_over_every_recipe(tmp_path):
    study = optuna.create_study(direction="maximize")
    recipe = {"boundary": 4, "schedule": "static", "head_lr": 0.01}
    study.add_trial(trial(recipe, [epoch(1, 4)], 0.7, **{records.BASELINE: "linear_probe"}))
    study.add_trial(trial(GRADUAL, [epoch(1, 1)], 0.9))
    note = study_story.study_note(study, "val_accuracy", "**Report:** here")
    assert "**Best: trial 1 · searched**, val_accuracy 0.9000" in note
    row = next(line for line in note.splitlines() if line.startswith("| linear_probe"))
    assert "+0.2000" in row and "frozen blocks 1 (vs 4)" in row and "schedule gradual" in row
    assert note.rstrip().endswith("**Report:** here")
    assert "found at finished trial 2 of 2" in study_story.improving(study)
