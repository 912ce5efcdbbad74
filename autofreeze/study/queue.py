"""The study's queue: which trial a worker runs next, taken through Optuna's public API.

Optuna's own ``Study.ask`` pops waiting trials in the order they were enqueued, so a retried
trial (after Ctrl-C or a dead worker) and a re-evaluation waited behind every recipe and prior
still queued; with a budget smaller than the queue they never ran and the comparison silently
lost a recipe. Optuna has no public hook for that order, so a worker takes its trial here:

1. the waiting trials, ordered by :func:`queue_order` (retries and re-evaluations first, then
   by number), are claimed one by one with ``BaseStorage.set_trial_state_values(trial_id,
   RUNNING)``, which succeeds for one worker only (the same claim ``Study.ask`` makes);
2. with nothing waiting, a new trial is created for the sampler (``create_new_trial``).

Either way the trial is ``optuna.Trial(study, trial_id)``, what ``Study.ask`` returns. The trial
ids come from the storage's public lookups, never from a private attribute of a trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autofreeze.study import records


def queue_order(trial: FrozenTrial) -> tuple[int, int]:
    """Retries (and the re-evaluation trials of a study from before re-runs were recorded on
    the study) before any other waiting trial; otherwise first come."""
    jumps = records.is_retry(trial) or records.reevaluation_of(trial) is not None
    return (0 if jumps else 1, trial.number)


@dataclass(frozen=True)
class StudyOnStorage:
    """A study with the storage object its process opened (``open_storage``): what the queue,
    heartbeats, artifacts and notes address by id, through ``BaseStorage``'s public methods."""

    study: optuna.Study
    storage: BaseStorage

    @cached_property
    def study_id(self) -> int:
        """The study's id in the storage (looked up once: a study keeps its id)."""
        return self.storage.get_study_id_from_name(self.study.study_name)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def live_trial(self, number: int) -> optuna.Trial:
        """Trial ``number`` as ``Study.ask`` returns one (only for a trial that is running)."""
        return optuna.Trial(self.study, self.trial_id(number))

    def claim(self, trials: list[FrozenTrial] | None = None) -> optuna.Trial | None:
        """Claim the first waiting trial in :func:`queue_order`; None when there is none left
        for this worker. ``trials``: the study's trials as the worker has just read them (one
        read a step: :func:`autofreeze.search.trials.run_trials`), else read here."""
        if trials is None:
            trials = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        for trial in sorted(waiting, key=queue_order):
            trial_id = self.trial_id(trial.number)
            try:  # another worker may claim or finish it first: take the next one
                if self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    return self._running(trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def ask(self, trials: list[FrozenTrial] | None = None) -> optuna.Trial:
        """The next trial to run: a claimed waiting one (of ``trials``, see :meth:`claim`),
        else a new one for the sampler."""
        trial = self.claim(trials)
        if trial is None:
            trial = self._running(self.storage.create_new_trial(self.study_id))
        return trial

    def _running(self, trial_id: int) -> optuna.Trial:
        """The trial as ``Study.ask`` returns it, its id noted for its records and beats."""
        trial = optuna.Trial(self.study, trial_id)
        records.know_trial_id(trial, trial_id)
        return trial
