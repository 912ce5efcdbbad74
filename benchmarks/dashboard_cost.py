"""What the dashboard output costs: the quickstart search with `[study] dashboard` on and off.

Run: .venv/bin/python benchmarks/dashboard_cost.py [--repeats 1]
Writes docs/benchmarks.md (section "Dashboard output"). Each run is `autofreeze search` on a
copy of studies/quickstart.toml (the weights made once beforehand), on a fresh SQLite file,
alternating on and off; the figure is the ratio of the wall times and the cost per trial.
The same seeds give the same trials either way, which the script checks.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402

QUICKSTART = ROOT / "studies" / "quickstart.toml"
CLI = [sys.executable, "-m", "autofreeze"]


def config(folder: Path, dashboard: bool) -> Path:
    switch = f"[study]\ndashboard = {str(dashboard).lower()}\n"
    text = QUICKSTART.read_text().replace("[study]\n", switch, 1)
    weights = ROOT / "studies" / "weights" / "resnet10t-digits0-4.safetensors"
    text = re.sub(r'^weights = "[^"]*"', f'weights = "{weights}"', text, flags=re.M)
    path = folder / f"quickstart-{'on' if dashboard else 'off'}.toml"
    path.write_text(text)
    return path


def search(path: Path, db: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [*CLI, "search", str(path), "--storage", f"sqlite:///{db}", "--json"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    subprocess.run([*CLI, "pretrain", str(QUICKSTART)], check=True, capture_output=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    results: dict[bool, str] = {}
    trials = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.repeats):
            for dashboard in (False, True):
                seconds, out = search(config(folder, dashboard), folder / f"{dashboard}-{r}.db")
                times[dashboard].append(seconds)
                summary = json.loads(out)
                results[dashboard] = json.dumps(summary["best"]["plan"], sort_keys=True)
                trials = len(summary["comparison"]) and summary["comparison"][0]["of"]
                print(f"dashboard={dashboard}: {seconds:.1f} s", file=sys.stderr)
    assert results[True] == results[False], "the dashboard output changed the search"
    off, on = min(times[False]), min(times[True])
    runs = trials + 6  # the budget and the re-evaluation runs (3 plans x 2 seeds)
    body = f"""
Command: `.venv/bin/python benchmarks/dashboard_cost.py --repeats {args.repeats}`, on
{platform.machine()}, 2 cores, Python {platform.python_version()} (runs of each, alternating:
{args.repeats}; the fastest is taken). The quickstart search (40 trials and 6 re-evaluation
runs, trials of about 2 s) with `[study] dashboard = false` and `true`; both chose the same plan.

| dashboard output | wall time | ratio |
| --- | --- | --- |
| off | {off:.1f} s | 1.00x |
| on (notes, a PNG per trial, study figures, report) | {on:.1f} s | {on / off:.2f}x |

That is {(on - off) / runs:.2f} s per trial, most of it drawing the trial's figure; on trials
of minutes it is noise. `dashboard = false` turns it off.
"""
    write_section("Dashboard output", body)
    print(body)


if __name__ == "__main__":
    main()
