"""Headless Chromium for the tests that look at the pages a reviewer opens (the dashboard and the
report), and a real ``autofreeze dashboard`` server to point it at.

Chromium is driven by its command line, one process per page, not by the DevTools protocol (no
WebSocket client is needed): ``--screenshot=PNG --dump-dom URL`` in the same run writes the
screenshot and prints the DOM after the page's JavaScript ran. What makes the command line wait
for optuna-dashboard's single-page app is ``--virtual-time-budget``: Chromium runs the page on a
virtual clock that stands still while a network request is pending and fast-forwards timers
otherwise, so the SPA's fetches of ``/api/...`` and of the note's images complete, React renders
and plotly draws before the budget of virtual time is used up and the page is captured. In case
a slow machine still captures too early, :func:`render` retries once with twice the budget
when the text that proves the data arrived is missing.

Every Chromium runs in its own process group (``start_new_session``), which is killed after the
page whatever happened, so no renderer or zygote outlives its test."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager, suppress
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from tests.processes import proc_stats

CHROMIUM = shutil.which("chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",  # the screenshot shows the page, not a scroll bar
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--mute-audio",
)
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"  # no host name resolves: nothing can be fetched
PNG = b"\x89PNG\r\n\x1a\n"
WHITE = (255, 255, 255)


class _Text(HTMLParser):
    """The text a reader sees: everything outside <script>, <style> and <noscript>."""

    SKIP = {"script", "style", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        self.depth += tag in self.SKIP

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    """The DOM's text, whitespace collapsed to single spaces."""
    parser = _Text()
    parser.feed(dom)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def _group_alive(pgid: int) -> list[int]:
    """The running (not zombie) processes of process group ``pgid``."""
    return [p for p, fields in proc_stats() if fields[0] != "Z" and int(fields[2]) == pgid]


def render(
    url: str,
    png: Path,
    *,
    size: tuple[int, int],
    ready: str,
    profile: Path,
    log: Path,
    budget_ms: int = 10_000,
    offline: bool = False,
) -> str:
    """Open ``url`` in headless Chromium at window ``size``; write the screenshot to ``png`` and
    return the DOM after the scripts ran. ``ready`` is a text that only the rendered data
    shows: without it in the DOM the page is loaded once more with twice the budget."""
    dom = ""
    for budget in (budget_ms, 2 * budget_ms):
        args = [
            CHROMIUM,
            *FLAGS,
            *([OFFLINE] if offline else []),
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget}",
            f"--screenshot={png}",
            "--dump-dom",
            url,
        ]
        png.unlink(missing_ok=True)
        with log.open("a") as err:
            err.write(f"\n$ {' '.join(args)}\n")
            err.flush()
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
            try:
                out, _ = proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"chromium did not finish {url} in 90 s; see {log}") from None
            finally:
                _kill_group(proc)
        assert proc.returncode == 0, f"chromium exited {proc.returncode} on {url}; see {log}"
        dom = out.decode("utf-8", "replace")
        if ready in dom:
            break
    assert png.is_file(), f"chromium wrote no screenshot of {url}; see {log}"
    return dom


def _kill_group(proc: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):  # the group ended with its leader
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while (left := _group_alive(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"chromium processes {left} outlived their page"


def screenshot_colours(png: Path, size: tuple[int, int]) -> Counter:
    """The pixel count of each RGB colour of a screenshot, once it is checked to be a PNG of
    the window's size with more than a few colours and more than white on it."""
    assert png.read_bytes().startswith(PNG), f"{png} is not a PNG"
    with Image.open(png) as image:
        assert image.size == size, f"{png} is {image.size}, the window {size}"
        rgb = image.convert("RGB")
    colours = Counter({c: n for n, c in rgb.getcolors(maxcolors=size[0] * size[1])})
    assert len(colours) > 50, f"{png} has only {len(colours)} colours: a blank page?"
    inked = 1 - colours[WHITE] / (size[0] * size[1])
    assert inked > 0.02, f"{png} is {inked:.1%} non-white: a blank page?"
    return colours


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


# -- the dashboard server -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dashboard(config: Path, log: Path):
    """``autofreeze dashboard CONFIG`` on a free port, its stderr (the request log) in ``log``;
    yields the base URL once the API answers, and stops the server after."""
    port = free_port()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autofreeze", "dashboard", str(config), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5):
                    break
            except OSError:
                assert proc.poll() is None, f"the dashboard exited: {log.read_text()}"
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
