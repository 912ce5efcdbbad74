"""Where progress goes: a callable taking one line. The CLI prints it on stderr.

A line is a note (always shown but with ``--quiet``) or a detail (each epoch, each finished
trial: shown with ``-v``): code that says a detail calls :func:`detail`, which hands it to the
progress's ``detail`` method if it has one (the terminal display, :mod:`autofreeze.review.terminal`)
and to the progress itself otherwise, so a plain callable still gets every line.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Protocol, runtime_checkable

Progress = Callable[[str], None]


@runtime_checkable
class DetailedProgress(Protocol):
    """Progress that shows notes and details differently (``-v`` shows details)."""

    def __call__(self, msg: str) -> None: ...

    def detail(self, msg: str) -> None: ...


# how a worker started by `autofreeze search` marks a detail line for its parent (--relay)
DETAIL_TAG = "[detail] "

_output_lost = False


def output_lost() -> bool:
    """Whether stderr went away (the parent ``autofreeze search`` died, the terminal closed).

    A worker then finishes the trial it is running, records it and stops, instead of dying
    at its next progress line with the trial left failed and no reason.
    """
    return _output_lost


def stderr_progress(msg: str) -> None:
    if _output_lost:
        return
    try:
        print(msg, file=sys.stderr, flush=True)
    except OSError as exc:
        lose_output(exc)


def lose_output(exc: OSError) -> None:
    """Stderr went away (``exc``: the write that failed): say so to :func:`output_lost`."""
    global _output_lost
    if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE, errno.EIO):
        raise exc
    _output_lost = True
    # whatever is still buffered, and every later write, goes nowhere instead of raising
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.__stderr__.fileno() if sys.__stderr__ else 2)
    finally:
        os.close(devnull)


def quiet(msg: str) -> None:
    """Progress that goes nowhere (library use, tests)."""


def detail(progress: Progress, msg: str) -> None:
    """Say a detail line: to ``progress.detail`` for a :class:`DetailedProgress`, else to
    ``progress`` itself."""
    if isinstance(progress, DetailedProgress):
        progress.detail(msg)
    else:
        progress(msg)
