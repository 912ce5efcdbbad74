"""Where progress goes: a callable taking one line. The CLI prints it on stderr."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

Progress = Callable[[str], None]

_output_lost = False


def output_lost() -> bool:
    """Whether stderr went away (the parent ``autofreeze search`` died, the terminal closed).

    A worker then finishes the trial it is running, records it and stops, instead of dying
    at its next progress line with the trial left failed and no reason.
    """
    return _output_lost


def stderr_progress(msg: str) -> None:
    global _output_lost
    if _output_lost:
        return
    try:
        print(msg, file=sys.stderr, flush=True)
    except OSError as exc:
        if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE, errno.EIO):
            raise
        _output_lost = True
        # whatever is still buffered, and every later write, goes nowhere instead of raising
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)


def quiet(msg: str) -> None:
    """Progress that goes nowhere (library use, tests)."""
