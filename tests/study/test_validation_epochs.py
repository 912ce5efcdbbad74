"""Which epochs a trial validates: where the configured pruner reads the metric, and the last;
checked against what Optuna's pruners really do (a test that fails when Optuna changes)."""

from __future__ import annotations

import random

import optuna
import pytest

from autofreeze.config import load_config
from autofreeze.study.sampling import make_pruner, validation_epochs
from tests.studies import write_study


def config(tmp_path, pruner: str, epochs: int, prune_after: float = 0.65, extra: str = ""):
    study_extra = f"prune_after = {prune_after}\n{extra}"
    return load_config(write_study(tmp_path, pruner=pruner, epochs=epochs, study_extra=study_extra))


def judged_epochs(cfg, n_trials: int = 150) -> set[int]:
    """The epochs at which the study's pruner stopped trials that reported every epoch."""
    epochs, rng, judged = cfg.training.epochs, random.Random(0), set()

    def run(trial: optuna.Trial) -> float:
        start, slope = rng.random(), 0.5 * rng.random()  # curves that cross
        for epoch in range(1, epochs + 1):
            trial.report(start + slope * epoch, epoch)
            if epoch < epochs and trial.should_prune():  # as the objective: never at the last
                judged.add(epoch)
                raise optuna.TrialPruned
        return start + slope * epochs

    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    study.optimize(run, n_trials=n_trials)
    return judged


@pytest.mark.parametrize(
    ("pruner", "epochs", "prune_after", "expected"),
    [
        ("median", 8, 0.65, {6, 7, 8}),
        ("percentile", 8, 0.65, {6, 7, 8}),
        ("percentile", 3, 0.1, {2, 3}),  # never before the second epoch
        ("hyperband", 8, 0.65, {6, 8}),
        ("hyperband", 20, 0.1, {2, 6, 18, 20}),  # W * 3**k
        ("hyperband", 9, 0.2, {2, 6, 9}),
        ("none", 8, 0.65, {8}),
    ],
)
def test_the_epochs_a_pruner_reads_and_the_last(tmp_path, pruner, epochs, prune_after, expected):
    cfg = config(tmp_path, pruner, epochs, prune_after)
    assert validation_epochs(cfg) == expected
    assert validation_epochs(cfg, compared=False) == {epochs}  # a re-evaluation's
    if pruner == "none":
        return
    # Optuna stops trials that report every epoch there only: hyperband at each rung, the
    # percentile and median pruners from the warm-up on (where depends on the curves)
    judged = judged_epochs(cfg)
    assert judged <= expected - {epochs} and min(expected) in judged
    if pruner == "hyperband":
        assert judged == expected - {epochs}


def test_every_epoch_and_multi_objective(tmp_path):
    every = config(tmp_path, "hyperband", 8)
    every.training.validation = "every_epoch"
    assert validation_epochs(every) is None and validation_epochs(every, compared=False) is None
    extra = 'objectives = ["val_accuracy", "train_seconds"]'
    multi = config(tmp_path, "median", 8, extra=extra)
    assert validation_epochs(multi) == {8}  # no intermediate values, no pruning
