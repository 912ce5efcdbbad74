"""The search tells its observers what happens, in order, and goes on without one that fails."""

from __future__ import annotations

from optuna.trial import TrialState

from autofreeze.config import load_config
from autofreeze.search.run import run_search
from tests.studies import write_study


class Recorder:
    """An observer that writes down every event it is told."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def started(self, run) -> None:
        self.events.append(("started", run.cfg.study.name, run.workers))

    def trial_ran(self, run, trial, state, values) -> None:
        # the trial is still running in the study: its result is known, it is not told yet
        frozen = run.on.storage.get_trial(run.on.trial_id(trial.number))
        self.events.append(("ran", trial.number, state, frozen.state, values))

    def trial_told(self, run, trial) -> None:
        self.events.append(("told", trial.number, trial.state))

    def ended(self, run) -> None:
        self.events.append(("ended",))


class Broken(Recorder):
    def trial_told(self, run, trial) -> None:
        raise RuntimeError("a bug in a display")


def test_observers_hear_each_trial_run_then_told_and_a_broken_one_is_dropped(tmp_path):
    cfg = load_config(write_study(tmp_path, "seen", n_trials=3, epochs=2))
    seen, broken, lines = Recorder(), Broken(), []
    result = run_search(cfg, progress=lines.append, observers=[broken, seen])
    assert result.ran == 3
    assert seen.events[0] == ("started", "seen", 1) and seen.events[-1] == ("ended",)
    trials = seen.events[1:-1]
    assert [e[0] for e in trials] == ["ran", "told"] * 3
    for ran, told in zip(trials[::2], trials[1::2], strict=True):
        number, state, in_study, values = ran[1:]
        assert in_study == TrialState.RUNNING and state == TrialState.COMPLETE and values
        assert told == ("told", number, TrialState.COMPLETE)
    # the broken observer was told the first trial ran, failed when it was told, and left
    assert [e[0] for e in broken.events] == ["started", "ran"]
    notes = [line for line in lines if "Broken failed at trial_told" in line]
    assert len(notes) == 1 and "a bug in a display" in notes[0]
    ran = [t.state for t in result.study.get_trials() if t.state != TrialState.WAITING]
    assert ran == [TrialState.COMPLETE] * 3  # the recipes past the budget still wait
