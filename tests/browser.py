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

import html
import json
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


# -- measuring what the browser drew ------------------------------------------------------------
# A page served from the dashboard's own origin (an artifact of a study of its storage) opens
# a dashboard page in an iframe of ``width`` pixels, waits until plotly drew every figure the
# page asks for and writes, as JSON in its <pre id="measured">, the rendered boxes (viewport
# pixels: left, top, right, bottom) and texts of each figure: its card, title, modebar, axis
# titles, ticks, legend, annotations, bar values, error bars and table header cells. Same origin:
# the frame's DOM is readable; no DevTools client is needed (``render`` dumps the page's DOM).
MEASURE_JS = """
const SELECTOR = %(selector)s, EXPECTED = %(expected)d;
const frame = document.getElementById("page");
const box = (el) => {
  const r = el.getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom];
};
const words = (el) => {  // a text plotly wrapped into lines: its words, one space apart
  const lines = [...el.querySelectorAll("tspan.line")];
  return lines.length ? lines.map((l) => l.textContent).join(" ").trim() : el.textContent;
};
const texts = (root, sel) => [...root.querySelectorAll(sel)]
  .filter((e) => e.textContent.trim())
  .map((e) => ({text: e.textContent, box: box(e)}));
function figure(plot) {
  const title = plot.querySelector(".gtitle");
  const modebar = plot.querySelector(".modebar");
  const headers = [...plot.querySelectorAll(".column-block#header .column-cell")].map((c) => ({
    text: words(c.querySelector(".cell-text")),
    box: box(c.querySelector(".cell-text")),
    cell: box(c.querySelector(".cell-rect")),
  }));
  return {
    id: plot.id,
    card: box(plot.closest(".MuiCard-root") || plot),
    svg: box(plot.querySelector(".main-svg")),
    area: box(plot.querySelector(".nsewdrag, .table-control-view") || plot),
    title: title && {text: title.textContent, box: box(title),
      lines: [...title.querySelectorAll("tspan.line")].map((t) => t.textContent)},
    modebar: modebar && box(modebar),
    axes: texts(plot, ".g-xtitle text, .g-ytitle text"),
    ticks: texts(plot, ".xtick text, .ytick text"),
    legend: texts(plot, ".legendtext"),
    annotations: texts(plot, ".annotation-text-g"),
    bars: texts(plot, "text.bartext"),
    errorbars: [...plot.querySelectorAll(".errorbar path")].map(box),
    headers: headers,
  };
}
let settled = null;
function measure() {
  const doc = frame.contentDocument;
  const plots = doc ? [...doc.querySelectorAll(SELECTOR)] : [];
  const drawn = plots.length >= EXPECTED && plots.every((p) => p.querySelector(".main-svg"));
  if (!drawn) { setTimeout(measure, 250); return; }
  const widths = JSON.stringify(plots.map((p) => box(p.querySelector(".main-svg"))));
  if (widths !== settled) { settled = widths; setTimeout(measure, 1000); return; }  // resized?
  document.getElementById("measured").textContent = JSON.stringify(plots.map(figure));
}
setTimeout(measure, 500);
"""


def measuring_page(path: str, selector: str, expected: int, width: int, height: int) -> str:
    """The HTML of a page that measures the figures ``selector`` finds (at least ``expected``)
    on the dashboard page ``path`` (same origin) rendered ``width`` pixels wide."""
    script = MEASURE_JS % {"selector": json.dumps(selector), "expected": expected}
    return (
        '<!doctype html><html><body style="margin:0"><pre id="measured"></pre>'
        f'<iframe id="page" src="{path}" style="width:{width}px;height:{height}px;border:0">'
        f"</iframe><script>{script}</script></body></html>"
    )


def measured(dom: str) -> list[dict]:
    """The measurements a measuring page wrote into its DOM."""
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), "the measuring page wrote nothing: see the screenshot"
    return json.loads(html.unescape(found.group(1)))


def inside(inner: list[float], outer: list[float], slack: float = 0.5) -> bool:
    """Whether box ``inner`` lies within box ``outer`` (boxes: left, top, right, bottom)."""
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


def overlap(a: list[float], b: list[float]) -> bool:
    """Whether two boxes share any area (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
