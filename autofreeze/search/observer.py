"""What the search tells the people watching it: one typed protocol, implemented by the terminal
display and the optuna-dashboard publisher (:mod:`autofreeze.review`), handed to the search by
the CLI. The search never imports them: observers, not imports, carry results upward.

The events, in order:

- ``started(run)``: the study is prepared and its trials are about to run (here, in worker
  processes, or by ``autofreeze worker`` from another machine);
- ``trial_ran(run, trial, state, values)``: a trial's objective has returned (or failed with a
  reason); its result is fixed and it is about to be told. The trial is still RUNNING: the
  only moment Optuna lets a file be attached to it as an artifact (a finished trial's
  attributes are frozen), so a trial's figure is drawn here, by the trial loop, outside the
  objective;
- ``trial_told(run, trial)``: the trial is finished in the study (its note is written here);
- ``ended(run)``: the run is over (the study's note, figures and report are written here).

An observer that fails is said once and then left out; it never changes a trial, and the
search goes on (:class:`Observers`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from optuna.trial import FrozenTrial, TrialState

from autofreeze.progress import Progress, quiet

if TYPE_CHECKING:
    import optuna

    from autofreeze.config import StudyConfig
    from autofreeze.study.queue import StudyOnStorage


@dataclass(frozen=True)
class Run:
    """What a search or a worker runs, as its observers see it.

    Attributes:
        on: the study and the storage this process opened.
        cfg: the config the trials run (the one stored in the study).
        workers: processes running trials at once (None: count the running trials).
        reevaluate: whether the re-evaluation runs after the budget belong to this run.
    """

    on: StudyOnStorage
    cfg: StudyConfig
    workers: int | None = None
    reevaluate: bool = False

    @property
    def study(self) -> optuna.Study:
        return self.on.study


class SearchObserver(Protocol):
    """Told what the search does; never asked anything back."""

    def started(self, run: Run) -> None: ...

    def trial_ran(
        self, run: Run, trial: optuna.Trial, state: TrialState, values: list[float] | None
    ) -> None: ...

    def trial_told(self, run: Run, trial: FrozenTrial) -> None: ...

    def ended(self, run: Run) -> None: ...


class Observers:
    """Several observers as one: each event goes to each in turn; one that raises is said once
    on ``progress`` and left out from then on (a bug there never costs a trial its result)."""

    def __init__(self, observers: Iterable[SearchObserver] = (), progress: Progress = quiet):
        self.observers = list(observers)
        self.progress = progress

    def _each(self, event: str, *args: object) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, event)(*args)
            except Exception as exc:  # noqa: BLE001 - a bug in showing must not stop the search
                self.observers.remove(observer)
                self.progress(
                    f"note: {type(observer).__name__} failed at {event} ({type(exc).__name__}: "
                    f"{exc}); the search goes on without it"
                )

    def started(self, run: Run) -> None:
        self._each("started", run)

    def trial_ran(
        self, run: Run, trial: optuna.Trial, state: TrialState, values: list[float] | None
    ) -> None:
        self._each("trial_ran", run, trial, state, values)

    def trial_told(self, run: Run, trial: FrozenTrial) -> None:
        self._each("trial_told", run, trial)

    def ended(self, run: Run) -> None:
        self._each("ended", run)
