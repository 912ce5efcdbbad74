"""Where progress goes: a callable taking one line. The CLI prints it on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def quiet(msg: str) -> None:
    """Progress that goes nowhere (library use, tests)."""
