"""The report of benchmarks/search_quality.py, from its results file alone (no training): the
section "Search quality" of docs/benchmarks.md and docs/figures/search_quality_anytime.png."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._quality_methods import METHODS, TOP_SHARE
from benchmarks._quality_tasks import TASKS
from benchmarks._report import DOC, write_section

FIGURE = DOC.parent / "figures" / "search_quality_anytime.png"
# one per method, in METHODS order: markers and dashes tell apart lines that coincide
STYLES: tuple[dict[str, Any], ...] = (
    {"marker": "o", "markersize": 4, "linewidth": 1},
    {"marker": "s", "markersize": 3, "linewidth": 1, "linestyle": "--"},
    {"marker": "^", "markersize": 3, "linewidth": 1, "linestyle": ":"},
    {"marker": "v", "markersize": 3, "linewidth": 1, "linestyle": "-."},
    {"marker": "D", "markersize": 4, "linewidth": 2.2},
    {"marker": "x", "markersize": 4, "linewidth": 1.5, "linestyle": (0, (5, 1))},
)
FRACTION_NAMES = ("1/6", "1/3", "1/2", "2/3", "1")
COMMAND = ".venv/bin/python benchmarks/search_quality.py"


# -- statistics ----------------------------------------------------------------------------------
def interval(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95 % Student's t interval (nan for one value)."""
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values)) if values else math.nan
    if n < 2:
        return mean, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return mean, half


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


class Table:
    """The results arranged by task, method and seed: only seeds that every method ran."""

    def __init__(self, results: dict[str, Any], order: tuple[str, ...] = METHODS) -> None:
        self.results = results
        runs = results["runs"]
        self.methods = [m for m in order if any(k.endswith(f"|{m}") for k in runs)]
        self.runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for task in TASKS:
            seeds = sorted({int(k.split("|")[1]) for k in runs if k.startswith(f"{task}|")})
            seeds = [s for s in seeds if all(f"{task}|{s}|{m}" in runs for m in self.methods)]
            if seeds:
                self.runs[task] = {
                    m: [runs[f"{task}|{s}|{m}"] for s in seeds] for m in self.methods
                }
        self.tasks = list(self.runs)

    def seeds(self, task: str) -> int:
        return len(self.runs[task][self.methods[0]])

    def at(self, task: str, method: str, i: int = -1) -> list[float]:
        """Test accuracies at fraction ``i`` of T over the seeds (seeds with no plan left out)."""
        return [r["anytime"][i] for r in self.runs[task][method] if r["anytime"][i] is not None]

    def mean_at(self, task: str, method: str, i: int = -1) -> float:
        """The mean over seeds, nan unless every seed had a plan then."""
        values = self.at(task, method, i)
        return float(np.mean(values)) if len(values) == self.seeds(task) else math.nan

    def mean_end(self, task: str, method: str) -> float:
        """The mean over seeds of the test accuracy at the method's own end (nan: no plan)."""
        values = [r["end_test"] for r in self.runs[task][method]]
        return math.nan if None in values else float(np.mean(values))

    def curve(self, task: str, method: str) -> list[float]:
        return [self.mean_at(task, method, i) for i in range(len(FRACTION_NAMES))]

    def mean_curve(self, method: str) -> list[float]:
        """The mean over tasks at each fraction (nan where a task had no plan yet)."""
        return [
            float(np.mean([self.mean_at(t, method, i) for t in self.tasks]))
            for i in range(len(FRACTION_NAMES))
        ]


# -- the section ---------------------------------------------------------------------------------
def cell(values: list[float], n: int) -> str:
    mean, half = interval(values)
    if not values:
        return "-"
    text = f"{mean:.3f}" + ("" if math.isnan(half) else f" ± {half:.3f}")
    return text + ("" if len(values) == n else f" ({len(values)} of {n})")


def accuracy_lines(t: Table) -> list[str]:
    head = " | ".join(t.methods)
    lines = [
        f"| task | what it tests | {head} | autofreeze - vanilla |",
        "| --- | --- | " + " | ".join("---" for _ in t.methods) + " | --- |",
    ]
    for task in t.tasks:
        n = t.seeds(task)
        cells = " | ".join(cell(t.at(task, m), n) for m in t.methods)
        diff = diffs(t, task)
        lines.append(f"| {task} | {TASKS[task].what} | {cells} | {cell(diff, n)} |")
    return lines


def diffs(t: Table, task: str) -> list[float]:
    """autofreeze minus vanilla at T, per seed (seeds where both had a plan)."""
    out = []
    for a, v in zip(t.runs[task]["autofreeze"], t.runs[task]["vanilla"], strict=True):
        if a["anytime"][-1] is not None and v["anytime"][-1] is not None:
            out.append(a["anytime"][-1] - v["anytime"][-1])
    return out


def reach(t: Table, task: str, method: str = "autofreeze", target: str = "vanilla") -> float:
    """The first fraction of T at which ``method``'s mean test accuracy reaches ``target``'s
    at T (inf: not by T)."""
    goal = t.mean_at(task, target)
    fractions = (1 / 6, 1 / 3, 1 / 2, 2 / 3, 1.0)
    for f, value in zip(fractions, t.curve(task, method), strict=True):
        if value >= goal - 1e-9:
            return f
    return math.inf


def verdict_lines(t: Table) -> list[str]:
    """Wins and losses of autofreeze against the vanilla loop, and what else was best."""
    per_task = {task: float(np.mean(diffs(t, task))) for task in t.tasks if diffs(t, task)}
    wins = [k for k, d in per_task.items() if d > 1e-9]
    losses = [k for k, d in per_task.items() if d < -1e-9]
    mean, half = interval(list(per_task.values()))
    times = sorted(reach(t, task) for task in t.tasks)
    median = statistics.median(times) if times else math.inf
    said_median = "not reached by T" if math.isinf(median) else f"{median:.2f} T"
    lost = ", ".join(f"{k} ({per_task[k]:+.3f})" for k in losses) or "none"
    best = {task: max(t.methods, key=lambda m: t.mean_at(task, m)) for task in t.tasks}
    counts = {m: sum(b == m for b in best.values()) for m in t.methods}
    return [
        f"**autofreeze against the vanilla loop at T**: higher mean test accuracy in {len(wins)} "
        f"of {len(per_task)} tasks, lower in {len(losses)} ({lost}), equal in "
        f"{len(per_task) - len(wins) - len(losses)}. The mean difference over tasks is "
        f"{mean:+.3f}"
        + ("" if math.isnan(half) else f", 95 % interval ± {half:.3f}")
        + " (Student's t over the per-task means, each the mean over its seeds, "
        f"{len(per_task) - 1} degrees of freedom: it treats the tasks as the sample and the "
        "seed-to-seed noise within a task as part of each task's mean).",
        "",
        "**Time to the vanilla loop's result**: the first measured fraction of T at which "
        "autofreeze's mean test accuracy (over seeds) reaches the vanilla loop's at T, median "
        f"over tasks: {said_median} (per task: "
        + ", ".join(
            f"{task} {'never' if math.isinf(reach(t, task)) else f'{reach(t, task):.2f}'}"
            for task in t.tasks
        )
        + ").",
        "",
        "**Best method at T, by task** (highest mean test accuracy; ties go to the first "
        "listed): " + ", ".join(f"{m} {c}" for m, c in counts.items() if c) + ".",
    ]


def anytime_lines(t: Table) -> list[str]:
    lines = [
        "| method | " + " | ".join(f"{f} T" for f in FRACTION_NAMES) + " |",
        "| --- | " + " | ".join("---" for _ in FRACTION_NAMES) + " |",
    ]
    for m in t.methods:
        values = " | ".join(number(v) for v in t.mean_curve(m))
        lines.append(f"| {m} | {values} |")
    return lines


def wall_lines(t: Table) -> list[str]:
    """Wall time per method as a ratio to the vanilla loop's, what it ran, and its test
    accuracy at T beside the one at its own end (a method stopped by time may overrun T)."""
    lines = [
        "| method | wall / vanilla: median (range) | trials per search (mean) | full-length "
        "trials (mean) | test at T | test at its end |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in t.methods:
        pairs = [
            (r, v)
            for task in t.tasks
            for r, v in zip(t.runs[task][m], t.runs[task]["vanilla"], strict=True)
        ]
        ratios = [r["seconds"] / v["seconds"] for r, v in pairs]
        trials = np.mean([r["info"].get("trials", 0) for r, _ in pairs])
        full = np.mean([r["info"].get("full_trials", 0) for r, _ in pairs])
        at_t = t.mean_curve(m)[-1]
        end = np.mean([t.mean_end(task, m) for task in t.tasks])
        lines.append(
            f"| {m} | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{trials:.1f} | {full:.1f} | {number(at_t)} | {number(end)} |"
        )
    return lines


def number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def autofreeze_lines(t: Table) -> list[str]:
    """What autofreeze did with the time: its limit, trials, re-evaluation, winners."""
    runs = [r for task in t.tasks for r in t.runs[task]["autofreeze"]]
    limits = sorted({r["info"].get("limit", "?") for r in runs})
    reran = [r["info"].get("reevaluations", 0) for r in runs]
    winners: dict[str, int] = {}
    for r in runs:
        w = r["info"].get("winner") or "none"
        winners[w] = winners.get(w, 0) + 1
    overrun = [r["seconds"] / r["budget"] for r in runs]
    end_vs_t = [
        r["end_test"] - r["anytime"][-1]
        for r in runs
        if r["end_test"] is not None and r["anytime"][-1] is not None
    ]
    return [
        f"autofreeze ran with `[study] {' / '.join(limits)} = T` and `n_trials = 200`; it "
        f"re-ran its top plans in {sum(n > 0 for n in reran)} of {len(runs)} searches "
        f"({np.mean(reran):.1f} re-runs on average); its chosen plans were "
        + ", ".join(f"{k} ({v})" for k, v in sorted(winners.items()))
        + f". Its wall time was {min(overrun):.2f}-{max(overrun):.2f} T; what it handed over at "
        f"its own end differed from its choice at T by {np.mean(end_vs_t):+.3f} test accuracy "
        "on average.",
    ]


def rank_lines(t: Table, epochs: int) -> list[str]:
    lines = [
        "| task | " + " | ".join(f"epoch {e}" for e in range(1, epochs + 1)) + " |",
        "| --- | " + " | ".join("---" for _ in range(epochs)) + " |",
    ]
    for task in t.tasks:
        curves = [c for r in t.runs[task]["vanilla"] for c in r["curves"]]
        if len(curves) < 3:
            continue
        final = [c[-1] for c in curves]
        corr = [spearman([c[e] for c in curves], final) for e in range(epochs)]
        lines.append(f"| {task} | " + " | ".join(f"{c:.2f}" for c in corr) + " |")
    return lines


def settings_text(t: Table) -> str:
    s = t.results["settings"]
    trials = ", ".join(
        f"{task} {s['trials'] or TASKS[task].trials}"
        + (f" ({TASKS[task].image_size} px)" if TASKS[task].image_size != 32 else "")
        for task in t.tasks
    )
    seeds = sorted({t.seeds(task) for task in t.tasks})
    return (
        f"Command: `{COMMAND}"
        + (f" --trials {s['trials']}" if s["trials"] else "")
        + (f" --epochs {s['epochs']}" if s["epochs"] != 6 else "")
        + (f" --test-seeds {s['test_seeds']}" if s["test_seeds"] != 1 else "")
        + "` (run in chunks with `--tasks`, `--seeds`, `--methods`, then `--report`); machine: "
        f"{t.results['machine']}; one method at a time, one process, {s.get('threads', 1)} "
        "torch thread(s) (two threads made timings erratic, several times slower, whenever "
        "someone else used a core of this shared machine; timings still carry their load). "
        "Source backbone: the quickstart's resnet10t trained "
        f"on digits 0-4. Every training: {s['epochs']} epochs, batch 25, AdamW, 32 px unless "
        f"said. {len(t.tasks)} tasks, {'/'.join(map(str, seeds))} seeds each (seed s draws the "
        "task's images and seeds the samplers and training). The vanilla loop's trials per "
        f"task: {trials}.\n\n"
        "**How it is measured.** The vanilla loop runs first; its wall time T (from its start "
        "to its last trial, data decoded beforehand) is the budget of every other method on "
        "that task and seed. vanilla: what a user writes from Optuna's PyTorch example, "
        "TPESampler with Optuna's defaults over the boundary, the head LR and the backbone LR "
        "ratio, static schedule, validation after every epoch, no pruning, no baselines, no "
        "probe, no cache, no re-evaluation, a fixed number of trials. random: the same space "
        "with RandomSampler for T. tpe_hyperband: TPE with Optuna's HyperbandPruner (epochs as "
        "the resource, 1 to all, reduction factor 3) for T. top_after_one_epoch (Egele et al. "
        "2023): random configurations trained for one epoch each (the first epoch of the full "
        f"schedule), the top {TOP_SHARE:.0%} then trained fully in rank order (then the next "
        "ones while time is left), the first round sized from the first three one-epoch "
        "trainings. The four share the seed, so their first configurations coincide (TPE "
        "starts with Optuna's 10 random trials): a paired comparison. These four are plain "
        "Optuna loops in memory around autofreeze's own "
        "objective and trainer, so training is identical. autofreeze: its default study "
        "config (baselines, probe, pruner, feature cache, re-evaluation) with a wall-time "
        "budget of T (`[study] budget`, or `timeout` where the product lacks it). After each "
        "finished trial each method's choice is recorded (the best completed full-length "
        "trial by validation accuracy; autofreeze: its best counted trial, then its own "
        "final choice). A method's result at a fraction f of T is its choice among the "
        "trials finished by f T; a trial that ends after T does not count at T (a method "
        "stopped by time may overrun T by one trial, shown in the wall-time table). Each "
        "choice is trained again on the train split with the task's seed"
        + (f" and {s['test_seeds'] - 1} more" if s["test_seeds"] > 1 else "")
        + " and evaluated on a test split that no search saw (digits: 60 images per class; "
        "photos: 40 patches per class from regions of each picture that no train or "
        "validation patch touches); each distinct plan once per task and seed. Shown: mean "
        "over seeds ± the half-width of the 95 % Student's t interval over seeds."
    )


def section(t: Table) -> str:
    epochs = t.results["settings"]["epochs"]
    figure = FIGURE.relative_to(DOC.parent)
    parts = [
        settings_text(t),
        "Test accuracy at T:",
        "\n".join(accuracy_lines(t)),
        "\n".join(verdict_lines(t)),
        "Anytime: mean over tasks of the test accuracy of each method's choice at a fraction "
        "of T (`-`: some task had no full-length trial finished yet). One panel per task and "
        f"the mean over tasks: ![anytime curves]({figure})",
        "\n".join(anytime_lines(t)),
        "Wall time and trials:",
        "\n".join(wall_lines(t)),
        "\n".join(autofreeze_lines(t)),
        "Rank correlation (Spearman) of each epoch's validation accuracy with the final one, "
        "over the vanilla loops' trials (no pruning, full curves; what a pruner's warm-up is "
        "set from, see Pruning calibration):",
        "\n".join(rank_lines(t, epochs)),
    ]
    return "\n\n".join(parts)


# -- the figure ----------------------------------------------------------------------------------
def draw(t: Table, path: Path = FIGURE, order: tuple[str, ...] = METHODS) -> None:
    """Test accuracy against the fraction of T, one line per method, one panel per task and
    one for the mean over tasks; ``order``: the methods, each drawn in its :data:`STYLES`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*t.tasks, "mean over tasks"]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    x = [1 / 6, 1 / 3, 1 / 2, 2 / 3, 1.0]
    for ax, panel in zip(axes.flat, panels, strict=False):
        for m in t.methods:
            y = t.mean_curve(m) if panel == "mean over tasks" else t.curve(panel, m)
            ax.plot(x, y, label=m, **STYLES[order.index(m)])
        ax.set_title(panel, fontsize=9)
        ax.set_xticks(x, FRACTION_NAMES, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].set_ylabel("test accuracy", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(t.methods), fontsize=8)
    fig.supxlabel("fraction of the vanilla loop's wall time T", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / (2.6 * rows)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- entry ---------------------------------------------------------------------------------------
def report(path: Path, pruning: bool = False) -> None:
    """Write the section and the figure from the results file; with ``pruning``, also the
    vanilla loops' curves for benchmarks/pruning.py and its section."""
    results = json.loads(path.read_text())
    if results.get("version") != 2:
        raise SystemExit(f"{path}: not a results file of this benchmark's version; run it first")
    t = Table(results)
    if not t.tasks or "vanilla" not in t.methods or "autofreeze" not in t.methods:
        raise SystemExit(f"{path}: no task with vanilla and autofreeze runs for the same seed")
    draw(t)
    body = section(t)
    write_section("Search quality", body)
    print(body)
    if pruning:
        save_curves(t)
    print(f"wrote {DOC} and {FIGURE}", file=sys.stderr)


def save_curves(t: Table) -> None:
    """The vanilla loops' full curves, for the pruner calibration (benchmarks/pruning.py)."""
    from benchmarks import pruning

    curves = {task: [c for r in t.runs[task]["vanilla"] for c in r["curves"]] for task in t.tasks}
    command = f"{COMMAND} --report --pruning"
    pruning.CURVES.parent.mkdir(exist_ok=True)
    pruning.CURVES.write_text(json.dumps({"command": command, "curves": curves}) + "\n")
    pruning.write(curves, command)
