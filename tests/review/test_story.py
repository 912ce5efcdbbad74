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


# -- words that count only what the sampler chose ------------------------------------------------
RECIPE_NAMES = ("linear_probe", "full_finetune_low_lr", "freeze_first_half", "gradual_unfreezing")


def study_of(*runs: tuple[str, float], state: TrialState = TrialState.COMPLETE) -> optuna.Study:
    """A study whose trials are ``(kind, value)`` in order, with the user attrs autofreeze
    sets: a textbook recipe carries ``baseline``, a probe's plan ``prior``, a searched trial
    neither (kind ``pruned``: a searched trial the pruner stopped at that value)."""
    study = optuna.create_study(direction="maximize")
    for i, (kind, value) in enumerate(runs):
        attrs = {
            "recipe": {records.BASELINE: RECIPE_NAMES[i % len(RECIPE_NAMES)]},
            "prior": {records.PRIOR: f"probe_k{i % 4}"},
        }.get(kind, {})
        pruned = kind == "pruned"
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED if pruned else state,
                value=value,
                intermediate_values={1: value},
                user_attrs={records.PLAN: GRADUAL, records.BLOCKS: BLOCKS, **attrs},
            )
        )
    return study


def settled_by_definition(runs: list[tuple[str, float]]) -> bool:
    """At least 5 searched trials (pruned ones too), and max(3, a quarter of them) after the
    best complete run."""
    complete = [(i, v) for i, (k, v) in enumerate(runs) if k != "pruned"]
    best = max(complete, key=lambda iv: (iv[1], -iv[0]))[0]
    searched = [k in ("searched", "pruned") for k, _ in runs]
    return sum(searched) >= 5 and sum(searched[best + 1 :]) >= max(3, sum(searched) // 4)


R, P, S, X = "recipe", "prior", "searched", "pruned"
SHORT_RUN = [(R, 0.6), (R, 0.7), (R, 0.9), (R, 0.5), (R, 0.4), (R, 0.8), (P, 0.85), (S, 0.7)]
STORIES = {
    # the defect: eight trials, one searched, the best a recipe: far too short to tell
    "one searched of eight": SHORT_RUN,
    "four searched, none better": [(R, 0.9), (R, 0.5), (S, 0.6), (S, 0.7), (S, 0.8), (S, 0.6)],
    "the last searched is the best": [(R, 0.5), (R, 0.6), *[(S, 0.1 * i) for i in range(1, 9)]],
    "twelve searched, none beats a recipe": [(R, 0.5), (R, 0.95), (P, 0.9), *[(S, 0.7)] * 12],
    "a gain, then ten searched without one": [
        (R, 0.5),
        *[(S, 0.5 + 0.04 * i) for i in range(10)],
        *[(S, 0.6)] * 10,
    ],
    "a gain two searched trials before the end of twenty": [
        (R, 0.5),
        *[(S, 0.4)] * 17,
        (S, 0.9),
        (S, 0.5),
        (S, 0.5),
    ],
    "pruned trials stopped high are no gain": [(R, 0.8), (S, 0.7), *[(X, 0.99)] * 4, (S, 0.6)],
}


@pytest.mark.parametrize("runs", STORIES.values(), ids=STORIES.keys())
def test_settled_is_said_only_when_enough_searched_trials_ran_after_the_last_gain(runs):
    text = study_story.improving(study_of(*runs))
    settled = settled_by_definition(runs)
    assert ("it had settled" in text) == settled, text
    n_searched = sum(k in (S, X) for k, _ in runs)
    too_short = f"only {n_searched} trial{'s' if n_searched != 1 else ''} of {len(runs)}"
    assert (too_short in text) == (n_searched < 5), text
    if not settled and n_searched >= 5:
        assert "still improving" in text
    assert "probe_k" not in text or "(prior)" in text
    assert "'" not in text  # the report escapes quote marks


def test_the_short_run_of_the_defect_says_it_cannot_tell():
    text = study_story.improving(study_of(*SHORT_RUN))
    assert "found at finished trial 3 of 8 (recipe freeze_first_half" in text
    assert "1 searched trial since" in text
    assert "only 1 trial of 8 was searched" in text and "too few to tell" in text
    assert "settled:" not in text and "raise n_trials" in text
    note = study_story.study_note(study_of(*SHORT_RUN), "val_accuracy")
    assert "too few to tell" in note and "it had settled" not in note


def bar_labels(study: optuna.Study) -> dict[int, str]:
    from autofreeze.review import figures

    fig = figures.baselines_vs_best(study, "val_accuracy")
    return {int(label.rsplit("(#", 1)[1].rstrip(")")): label for label in fig.data[0].y}


@pytest.mark.parametrize(
    ("runs", "best", "words"),
    [
        (SHORT_RUN, 2, "recipe freeze_first_half"),
        ([(R, 0.6), (P, 0.9), (S, 0.7), (S, 0.8), (P, 0.5)], 1, "probe plan probe_k1 (prior)"),
        ([(R, 0.6), (P, 0.7), (S, 0.95), (S, 0.8)], 2, "searched"),
    ],
    ids=["a recipe is best", "a prior is best", "a searched plan is best"],
)
def test_best_searched_never_labels_a_recipe_or_a_prior(runs, best, words):
    from autofreeze.review.summary import comparison

    study = study_of(*runs)
    trials = study.get_trials()
    assert comparison(study)[0]["recipe"] == f"BEST (trial {best}): {words}"
    labels = bar_labels(study)
    assert labels[best].startswith("chosen plan: ")
    for number, label in labels.items():
        t = trials[number]
        if "best searched" in label:
            assert study_story.searched(t)
        if records.baseline(t):
            assert records.baseline(t) in label and "searched" not in label
        if t.user_attrs.get(records.PRIOR):
            assert label.endswith(f"probe plan probe_k{number % 4} (prior) (#{number})")
    searched_values = [v for k, v in runs if k == S]
    shown = [n for n, label in labels.items() if "best searched" in label]
    assert [runs[n][1] for n in shown] == [max(searched_values)]  # the sampler's best only


# -- BatchNorm words only where a block is frozen -------------------------------------------------
FULL = {"boundary": 0, "schedule": "static", "head_lr": 0.01, "bn_mode": "train"}


def test_a_plan_that_freezes_nothing_says_nothing_about_batchnorm_in_frozen_blocks():
    from autofreeze.review.tables import short_plan

    for bn in ("eval", "train"):
        plan = {**FULL, "bn_mode": bn}
        assert "BatchNorm" not in story.plan_words(plan, 4), story.plan_words(plan, 4)
    assert "bn=" not in short_plan(FULL, 4)
    # a boundary, or a schedule that starts from the head, freezes blocks: the words stay
    assert "BatchNorm eval in frozen blocks" in story.plan_words(
        {**FULL, "bn_mode": "eval", "boundary": 2}, 4
    )
    assert "BatchNorm train in frozen blocks" in story.plan_words(GRADUAL, 4)
    lp_ft = {**FULL, "schedule": "lp_ft", "schedule_params": {"lp_epochs": 1}}
    assert "BatchNorm train in frozen blocks" in story.plan_words(lp_ft, 4)
    assert "bn=train" in short_plan({**FULL, "boundary": 1}, 4)


def test_a_freeze_map_without_a_frozen_cell_and_a_diff_of_unfrozen_plans_leave_batchnorm_out():
    from autofreeze.review.report import freeze_map_html

    full = story.freeze_map(trial(FULL, [epoch(1, 0, lrs={"head": 0.01}), epoch(2, 0)]))
    assert "BatchNorm" not in story.freeze_map_markdown(full)
    assert "BatchNorm" not in freeze_map_html(full)
    frozen = story.freeze_map(trial(GRADUAL, [epoch(1, 4), epoch(2, 3)]))
    assert "BatchNorm `train`" in story.freeze_map_markdown(frozen)
    assert "BatchNorm <code>train</code>" in freeze_map_html(frozen)
    # two plans that freeze nothing differ in nothing BatchNorm does to a frozen block
    assert study_story.plan_diff(FULL, {**FULL, "bn_mode": "eval"}) == "the same plan"
    assert "BatchNorm train (vs eval)" in study_story.plan_diff(
        {**FULL, "boundary": 1}, {**FULL, "bn_mode": "eval"}
    )
