"""The one way tests run the command line: in this process (click's runner, fast) or as a real
``python -m autofreeze`` subprocess (what a user's shell runs: its exit code, its stderr)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from autofreeze.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str) -> Result:
    """``autofreeze ARGS`` in this process. A bug raises in the test with its traceback (a
    user error is still an exit code and one line, as click's ``SystemExit``)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m autofreeze ARGS`` in a real subprocess (offline, as in conftest)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "autofreeze", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )
