"""The vanilla loop and autofreeze at equal wall time, both measured in one run.

``benchmarks/search_quality.py`` keeps every method's runs in one results file and re-runs a
method with ``--again`` against the vanilla loop's recorded wall time T. This machine's speed
moves between sessions, up to about 3x: the vanilla loop on parity, seed 0, took 16.8 s in the
recorded run and 51.0 s on an idle machine a day later. A re-run in another session therefore
gets more or fewer trials in T than the vanilla loop had. This check runs the two methods one
after the other, task by task, so that each T is measured together with the run that uses it:

    .venv/bin/python benchmarks/search_quality.py --methods vanilla,autofreeze \\
        --results benchmarks/results/search_quality_side.json --seeds 0,1,2
    .venv/bin/python benchmarks/side_by_side.py

The second command writes the section "Search quality, side by side" of docs/benchmarks.md
from the results file alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._quality_report import interval  # noqa: E402
from benchmarks._report import write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_quality_side.json"
FRACTIONS = ("1/6", "1/3", "1/2", "2/3", "1")


def pairs(results: dict[str, Any]) -> dict[str, dict[int, tuple[dict, dict]]]:
    """task -> seed -> (vanilla's run, autofreeze's run), where both ran."""
    out: dict[str, dict[int, tuple[dict, dict]]] = {}
    for key, run in results["runs"].items():
        task, seed, method = key.split("|")
        vanilla = results["runs"].get(f"{task}|{seed}|vanilla")
        if method == "autofreeze" and vanilla is not None:
            out.setdefault(task, {})[int(seed)] = (vanilla, run)
    return out


def cell(values: list[float]) -> str:
    mean, half = interval(values)
    return f"{mean:+.3f}" + ("" if half != half else f" ± {half:.3f}")  # nan: one value


def reach(by_seed: dict[int, tuple[dict, dict]]) -> str:
    """The first fraction of T at which autofreeze's mean over seeds reaches vanilla's at T."""
    target = sum(p[0]["anytime"][-1] for p in by_seed.values()) / len(by_seed)
    for j, fraction in enumerate(FRACTIONS):
        values = [p[1]["anytime"][j] for p in by_seed.values()]
        if None not in values and sum(values) / len(values) >= target - 1e-9:
            return fraction
    return "never"


def section(results: dict[str, Any]) -> str:
    runs = pairs(results)
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    lines = [
        "Command: `.venv/bin/python benchmarks/search_quality.py --methods vanilla,autofreeze "
        "--results benchmarks/results/search_quality_side.json --seeds "
        f"{','.join(map(str, seeds))}`, then `.venv/bin/python benchmarks/side_by_side.py`. "
        f"Machine: {results['machine']}, one process, 1 torch thread. The same tasks, "
        "methods and measurement as Search quality, but the vanilla loop and autofreeze run one "
        "after the other for each task and seed, so each T is measured with the run it budgets "
        "(see the script's text for why: this machine's speed moves between sessions).",
        "",
        "| task | seeds | vanilla at T | autofreeze at T | autofreeze - vanilla | trials "
        "(vanilla / autofreeze, mean) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    task_diffs = []
    higher = lower = 0
    for task, by_seed in runs.items():
        v = [p[0]["anytime"][-1] for p in by_seed.values()]
        a = [p[1]["anytime"][-1] for p in by_seed.values()]
        d = [x - y for x, y in zip(a, v, strict=True)]
        mean = sum(d) / len(d)
        task_diffs.append(mean)
        higher += mean > 1e-9
        lower += mean < -1e-9
        trials = [
            sum(p[i]["info"].get("trials", 0) for p in by_seed.values()) / len(by_seed)
            for i in (0, 1)
        ]
        lines.append(
            f"| {task} | {len(by_seed)} | {cell(v).lstrip('+')} | {cell(a).lstrip('+')} | "
            f"{cell(d)} | {trials[0]:.1f} / {trials[1]:.1f} |"
        )
    mean, half = interval(task_diffs)
    lines += [
        "",
        f"**autofreeze against the vanilla loop at T, side by side**: higher mean test accuracy "
        f"in {higher} of {len(task_diffs)} tasks, lower in {lower}; mean difference over tasks "
        f"{mean:+.3f}, 95 % interval ± {half:.3f} (Student's t over the per-task means, "
        f"{len(task_diffs) - 1} degrees of freedom).",
        "",
        "Anytime, mean over tasks of the test accuracy of each method's choice at a fraction of "
        "T (`-`: a task had no full-length trial finished yet):",
        "",
        "| method | " + " | ".join(f"{f} T" for f in FRACTIONS) + " |",
        "| --- | " + " | ".join("---" for _ in FRACTIONS) + " |",
    ]
    for i, method in enumerate(("vanilla", "autofreeze")):
        row = []
        for j in range(len(FRACTIONS)):
            values = [p[i]["anytime"][j] for s in runs.values() for p in s.values()]
            done = not any(x is None for x in values)
            row.append(f"{sum(values) / len(values):.3f}" if done else "-")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    reached = {task: reach(by_seed) for task, by_seed in runs.items()}
    ranks = sorted(
        FRACTIONS.index(f) if f in FRACTIONS else len(FRACTIONS) for f in reached.values()
    )
    median = ranks[len(ranks) // 2]
    lines += [
        "",
        "**Time to the vanilla loop's result**: the first fraction of T at which autofreeze's "
        "mean test accuracy (over seeds) reaches the vanilla loop's at T, median over tasks: "
        f"{FRACTIONS[median] + ' T' if median < len(FRACTIONS) else 'never'} (per task: "
        + ", ".join(f"{t} {f}" for t, f in reached.items())
        + ").",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    write_section("Search quality, side by side", section(results))
    print(f"wrote the section from {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
