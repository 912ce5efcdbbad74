"""Stopping a search: Ctrl-C (SIGINT) and SIGTERM, what ``timeout``, SLURM and Kubernetes send
first, stop it the same way.

Either signal raises :class:`Stopped`, a ``KeyboardInterrupt``, so everything that winds a
search down on Ctrl-C (the running trial told FAIL and re-queued, the workers told, the study
left consistent) does so on SIGTERM too. The process then exits with ``128 + signal``: 130 for
SIGINT, 143 for SIGTERM (the CLI, :mod:`autofreeze.cli._group`).

Handlers are installed for a ``with`` block only and the previous ones restored after it, so a
library caller gets its own handling back; outside the main thread Python allows no handler and
nothing is installed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived: ``signum`` is which, ``exit_code`` what the process exits with."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def words(self) -> str:
        """``interrupted`` for Ctrl-C, else ``stopped by SIGTERM``."""
        if self.signum == signal.SIGINT:
            return "interrupted"
        return f"stopped by {signal.Signals(self.signum).name}"


def stopped(exc: BaseException) -> Stopped:
    """``exc`` as a :class:`Stopped`: a plain ``KeyboardInterrupt`` is Ctrl-C."""
    return exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)


def raise_stopped(signum: int, frame: Any) -> None:
    """The handler that raises :class:`Stopped` wherever the main thread is."""
    raise Stopped(signum)


@contextmanager
def on_stop(handler: Callable[[int, Any], None] = raise_stopped) -> Iterator[None]:
    """Handle SIGINT and SIGTERM with ``handler`` inside the block; restore the previous
    handlers after it (nothing is installed outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)


class Interrupts:
    """Stop signals in the trial loop: one that arrives while a trial runs cuts it at once
    (inside :meth:`cutting`); anywhere else (Optuna creating or finishing a trial in the
    database, the wait between trials) it is held until that step is done and raised by
    :meth:`check`, so a signal never leaves a trial RUNNING with nobody behind it.

    Only the first signal cuts: a second one, while the cut trial is told FAIL and re-queued
    (a few writes to the database), is noted and changes nothing, so winding down is never cut
    in its turn; the process stops as soon as that bookkeeping is done.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._cut = False
        self._on: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self._cut:
            raise Stopped(signum)

    def __enter__(self) -> Interrupts:
        self._on = on_stop(self._handle)
        self._on.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._on.__exit__(*exc)

    def check(self) -> None:
        """Raise :class:`Stopped` if a signal was held."""
        if self.signum is not None:
            raise Stopped(self.signum)

    def cutting(self, objective: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``objective``, cut at once by a stop signal; one held while its trial was created
        stops it before it starts (the trial is then told FAIL and re-queued like any other)."""

        def run(trial: Any) -> Any:
            self.check()
            self._cut = True
            try:
                return objective(trial)
            finally:
                self._cut = False

        return run
