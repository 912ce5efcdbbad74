"""Memory peak of a study: the defaults (the probe and the re-evaluation on) against a plain
training run (both off), and each of the two alone, with the code of two revisions, side by
side in one run.

Run: .venv/bin/python benchmarks/memory_peak.py [--images 3000] [--size 160] [--trials 8]
[--weights none|pretrained] [--revs BEFORE,AFTER] [--folder DIR]
[--variants plain,probe,reevaluate,default]
Writes docs/benchmarks.md (section "Memory peak", every ``--weights`` scenario measured) and
benchmarks/results/memory_peak.json (``--from-json`` writes the section again from that file,
without measuring).

The image folder (imagefolder layout, 10 classes, 256 x 256 JPEGs made from scikit-learn's
digits by :mod:`benchmarks.data`) is decoded once at ``--size`` px into a store every run
links to, so that no run decodes. Each revision is taken from git (``git archive``) into a
temporary folder, and each run is ``run_search`` on the same study config (test_resnet from
random weights, or pretrained once on scikit-learn's digits by the ``[backbone.pretrain]``
recipe; one epoch, batch 64, ``n_trials = --trials``, everything else the defaults)
with only ``[study] probe`` and ``[study] reevaluate`` changed, in a process of its own whose
``PYTHONPATH`` is that revision. Its peak RSS is the process's ``VmHWM`` (what GNU time's
"maximum resident set size" reports); the phases (prepare, the probe, each trial, each
re-run) are timed and their peaks sampled from ``/proc/self/statm`` every 5 ms. "Held" is the
most memory a training starts with above what the process held after prepare: what earlier
phases left behind, counted as malloc's live bytes (glibc ``mallinfo2``: RSS also keeps what
the allocator holds for reuse after a free) and as RSS.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "memory_peak.json"
MB = 1e6
# the source task of "pretrained" weights: every digit of scikit-learn's set, made once
PRETRAIN = """
[backbone.pretrain]
dataset = { name = "digits", val_per_class = 20 }
epochs = 5
lr = 3e-3
batch_size = 64
"""
VARIANTS = {  # name: (probe, reevaluate)
    "plain": (False, 0),
    "probe": (True, 0),
    "reevaluate": (False, 3),
    "default": (True, 3),
}
CONFIG = """
[study]
name = "{name}"
n_trials = {trials}
seed = 0
probe = {probe}
reevaluate = {reevaluate}
dashboard = false

[backbone]
name = "test_resnet"
weights = "{weights}"
{pretrain}
[dataset]
name = "imagefolder"
path = "{folder}"

[training]
epochs = 1
batch_size = 64
image_size = {size}
"""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- one study, in a process of its own ---------------------------------------------------------
class Sampler:
    """RSS sampled every few ms in a thread: the peak since the phase began."""

    def __init__(self, every: float = 0.005) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, self.now())

    def begin(self) -> int:
        self.peak = now = self.now()
        return now

    def end(self) -> int:
        return max(self.peak, self.now())


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 (ctypes' own layout)
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def live_bytes() -> int | None:
    """Bytes malloc has handed out and not had back, over every arena (glibc's mallinfo2):
    what is alive, where RSS also counts what the allocator keeps for later after a free."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    info = fn()
    return int(info.uordblks + info.hblkhd)


def vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def one_study(config: Path) -> dict[str, Any]:
    """Run the study ``config`` with the phases hooked; its figures (the code is the one on
    ``PYTHONPATH``)."""
    rss = Sampler()
    import optuna

    import autofreeze.search.objective as objective_module
    import autofreeze.search.run as run_module
    from autofreeze.config import load_config

    phases: list[dict[str, Any]] = []

    def phase(kind: str, fn: Any, *args: Any) -> Any:
        live, start, t0 = live_bytes(), rss.begin(), time.perf_counter()
        try:
            return fn(*args)
        finally:
            peak = rss.end()
            phases.append(
                {
                    "kind": kind,
                    "start": start,
                    "peak": peak,
                    "end": rss.now(),
                    "live_start": live,
                    "live_end": live_bytes(),
                    "seconds": time.perf_counter() - t0,
                }
            )

    prepare, probe = run_module.prepare, run_module.run_probe
    run_module.prepare = lambda *a, **k: phase("prepare", lambda: prepare(*a, **k))
    run_module.run_probe = lambda prepared: phase("probe", probe, prepared)
    call = objective_module.Objective.__call__

    def watched(self: Any, trial: Any) -> Any:
        kind = "rerun" if isinstance(trial, optuna.trial.FixedTrial) else "trial"
        return phase(kind, call, self, trial)

    objective_module.Objective.__call__ = watched
    t0 = time.perf_counter()
    result = run_module.run_search(load_config(config), progress=say)
    return {
        "peak": vm("VmHWM"),
        "seconds": time.perf_counter() - t0,
        "trials": result.ran,
        "phases": phases,
        "autofreeze": str(Path(run_module.__file__).parents[2]),
    }


# -- the runs -----------------------------------------------------------------------------------
def checkout(rev: str, into: Path) -> str:
    """The tree of ``rev`` under ``into``; its commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return commit


def write_config(folder: Path, name: str, args: argparse.Namespace, store: Path) -> Path:
    probe, reevaluate = VARIANTS[name]
    folder.mkdir(parents=True)
    cache = folder / ".autofreeze-cache"
    cache.mkdir()
    (cache / "images").symlink_to(store)  # decoded once for every run
    config = folder / "study.toml"
    pretrained = args.weights == "pretrained"
    config.write_text(
        CONFIG.format(
            name=name,
            trials=args.trials,
            probe=str(probe).lower(),
            reevaluate=reevaluate,
            folder=args.folder,
            size=args.size,
            weights=store.parent / "weights.safetensors" if pretrained else "none",
            pretrain=PRETRAIN if pretrained else "",
        )
    )
    return config


def run_one(tree: Path, config: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(config)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=config.parent)
    if proc.returncode:
        sys.exit(f"{config}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["autofreeze"]) == tree, (got["autofreeze"], tree)
    return got


def decode_once(tree: Path, args: argparse.Namespace, tmp: Path) -> Path:
    """Decode the folder at ``--size`` into a store every run links to (and, for pretrained
    weights, make them once from the recipe)."""
    folder = tmp / "decode"
    config = write_config(folder, "plain", args, tmp / "images")
    (folder / ".autofreeze-cache" / "images").unlink()
    code = (
        "import sys; from autofreeze.config import load_config; "
        "from autofreeze.runs.prepare import prepare; "
        "from autofreeze.runs.pretrain import ensure_weights; "
        "cfg = load_config(sys.argv[1]); ensure_weights(cfg); prepare(cfg)"
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code, str(config)], env=env, check=True)
    store = tmp / "images"
    shutil.move(str(folder / ".autofreeze-cache" / "images"), store)
    return store


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """Per run: the peak, RSS after prepare, the probe's rise, the largest rise of a trial and
    of a re-run (each above the RSS it started with), and the most a training started with
    above the end of prepare ("held": malloc's live bytes, and RSS)."""
    ph = run["phases"]
    prepared = next(p for p in ph if p["kind"] == "prepare")
    base, live = prepared["end"], prepared["live_end"]

    def rise(kind: str) -> float | None:
        rises = [p["peak"] - p["start"] for p in ph if p["kind"] == kind]
        return max(rises) / MB if rises else None

    trainings = [p for p in ph if p["kind"] in ("trial", "rerun")]
    return {
        "peak_mb": run["peak"] / MB,
        "prepared_mb": base / MB,
        "probe_rise_mb": rise("probe"),
        "trial_rise_mb": rise("trial"),
        "rerun_rise_mb": rise("rerun"),
        "held_mb": max((p["live_start"] - live for p in trainings), default=0) / MB,
        "rss_held_mb": max((p["start"] - base for p in trainings), default=0) / MB,
        "trials": sum(p["kind"] == "trial" for p in ph),
        "reruns": sum(p["kind"] == "rerun" for p in ph),
        "minutes": run["seconds"] / 60,
    }


def machine() -> dict[str, Any]:
    import torch

    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    return {
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "ram_gib": total / 2**30,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.data import make_folder

    root = Path(args.folder)
    if not root.exists() or not any(root.glob("*/*.jpg")):
        say(f"generating {args.images} images in {root}")
        make_folder(root, args.images)
    n = len(list(root.glob("*/*.jpg")))
    if n != args.images:
        sys.exit(f"{root} holds {n} images, not --images {args.images}: use another folder")
    tmp = Path(tempfile.mkdtemp(prefix="autofreeze-memory-"))
    revs = args.revs.split(",")
    try:
        trees = {rev: tmp / f"tree{i}" for i, rev in enumerate(revs)}
        commits = {rev: checkout(rev, tree) for rev, tree in trees.items()}
        store = decode_once(trees[revs[-1]], args, tmp)
        runs: dict[str, dict[str, Any]] = {}
        for name in args.variants.split(","):  # the revisions side by side, variant by variant
            for rev in revs:
                label = f"{commits[rev]}/{name}"
                say(f"-- {label}")
                got = run_one(trees[rev], write_config(tmp / label, name, args, store))
                runs[label] = {"rev": commits[rev], "variant": name, **got, **summarise(got)}
                s = runs[label]
                say(
                    f"{label}: peak {s['peak_mb']:.0f} MB (after prepare {s['prepared_mb']:.0f}, "
                    f"held {s['held_mb']:.0f}), {s['trials']} trials, {s['reruns']} re-runs, "
                    f"{s['minutes']:.1f} min"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    u8 = n * 3 * args.size * args.size
    return {
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("one", "from_json")},
        "commits": [commits[r] for r in revs],
        "images": n,
        "u8_bytes": u8,
        "runs": runs,
    }


# -- the report ---------------------------------------------------------------------------------
PHASES_HEAD = (
    "| code | study | after prepare | probe rise | largest trial rise | largest re-run rise "
    "| held (live) | held (RSS) | trainings | minutes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


SCENARIOS = {  # --weights: how its runs are named in the report, and its verdict's opening
    "none": ("from random weights", "From random weights"),
    "pretrained": (
        "pretrained on scikit-learn's digits (the `[backbone.pretrain]` recipe, once)",
        "Pretrained",
    ),
}


def scenario(res: dict[str, Any]) -> tuple[str, str]:
    """One measured scenario: its text (command, set-up, the two tables) and its verdict."""
    a, info, runs = res["args"], res["machine"], res["runs"]
    before, after = res["commits"][0], res["commits"][-1]
    variants = [v for v in VARIANTS if f"{after}/{v}" in runs]
    cmd = (
        f"`.venv/bin/python benchmarks/memory_peak.py --images {res['images']} --size "
        f"{a['size']} --trials {a['trials']} --weights {a['weights']} --revs {a['revs']}`"
    )
    minutes = sum(r["minutes"] for r in runs.values())

    def peak(rev: str, v: str) -> float:
        return runs[f"{rev}/{v}"]["peak_mb"]

    rows = []
    for v in variants:
        probe, reevaluate = VARIANTS[v]
        what = f"{v} (probe {'on' if probe else 'off'}, reevaluate = {reevaluate})"
        cells = []
        for rev in (before, after):
            r = runs[f"{rev}/{v}"]
            ratio = r["peak_mb"] / peak(rev, "plain")
            cells.append(f"{r['peak_mb']:.0f} | {ratio:.2f}x | {r['held_mb']:.0f}")
        rows.append(f"| {what} | {' | '.join(cells)} |")
    phases = []
    for rev in (before, after):
        for v in variants:
            r = runs[f"{rev}/{v}"]
            phases.append(
                f"| {rev} | {v} | {r['prepared_mb']:.0f} | {fmt(r['probe_rise_mb'])} | "
                f"{fmt(r['trial_rise_mb'])} | {fmt(r['rerun_rise_mb'])} | {r['held_mb']:.0f} | "
                f"{r['rss_held_mb']:.0f} | {r['trials']} + {r['reruns']} | {r['minutes']:.1f} |"
            )
    verdict = ""
    if "default" in variants:
        d = {rev: peak(rev, "default") for rev in (before, after)}
        p = {rev: peak(rev, "plain") for rev in (before, after)}
        verdict = (
            f"{SCENARIOS[a['weights']][1]}, the defaults peaked at {d[before]:.0f} MB "
            f"against the plain run's {p[before]:.0f} ({d[before] / p[before]:.2f}x); now "
            f"{d[after]:.0f} against {p[after]:.0f} ({d[after] / p[after]:.2f}x)."
        )
    text = f"""
**test_resnet {SCENARIOS[a["weights"]][0]}.** {cmd} on {info["platform"]}, {info["cores"]} cores,
{info["ram_gib"]:.0f} GiB RAM, no GPU, torch {info["torch"]}, Python {info["python"]};
{minutes:.0f} min of studies. {res["images"]} JPEGs of 10 classes decoded once at {a["size"]} px
({res["u8_bytes"] / MB:.0f} MB of uint8, held in memory); code of {before} (before) and {after}
(after).

| study | before: peak MB | ratio | held MB | after: peak MB | ratio | held MB |
| --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{PHASES_HEAD}
{chr(10).join(phases)}
"""
    return text, verdict


def write_report(results: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks._report import write_section

    parts = [scenario(results[k]) for k in SCENARIOS if k in results]
    held_after = max(
        r["held_mb"]
        for res in results.values()
        for r in res["runs"].values()
        if r["rev"] == res["commits"][-1]
    )
    body = f"""
One study config (test_resnet, an image folder, one epoch, batch 64, `n_trials` as given, the
other settings the defaults) run with the code before and after the change, each study in a
process of its own, with only `[study] probe` and `[study] reevaluate` changed. Peak: the
process's peak RSS (`VmHWM`, what GNU time reports), MB; ratio: against the plain run of the
same code; held: the most memory a training (trial or re-run) started with above the end of
prepare, i.e. what earlier phases left behind, as malloc's live bytes (glibc `mallinfo2`). The
second table of each gives the phases: a rise is the phase's sampled peak above the RSS it
started with; held (RSS) also counts what the allocator keeps for reuse after a free.
{"".join(text for text, _ in parts)}
What was held beyond a training run, whichever plans added it: the frozen-prefix cache's
entries (of the recipes, of the sampled plans, of the probe's plans, which are static plans at
boundaries around its prediction, and of the re-runs, where a plan from random weights keys its
entry by the seed) were kept by the worker in its own memory, up to a quarter of the RAM, while
later trials trained; computing an entry held it twice (a list of batches joined; thrice for a
16-bit cache); and the probe held every block's pooled features for every image, joined into a
second copy, with float64 copies for the fit (1.6 KB an image for test_resnet's widths, but
images x widths in general). The re-evaluation allocates nothing of its own: a re-run is the
objective on a `FixedTrial`, with the worker's caches. Now a worker holds an entry only while
the trial that uses it runs (later trials map the file; between trials it is in the page
cache, which the kernel reclaims), computes it into one tensor, and the probe fits each block
from running sums (a d x d Gram matrix) and scores validation batch by batch. Which study
peaked highest before depended on which plans ran and cached: here the probe put first plans
that train without a cached prefix, and the defaults peaked below the plain run, whose recipes
and sampled plans cached. `tests/search/test_memory.py` holds the issue's case, where the
defaults' trainings cache and the plain run's do not (a plan from random weights re-run with
another seed: 1,282 against 1,144 MB before, 1,088 against 1,067 MB after). After, every study
here peaks at its largest single training (held at most {held_after:.0f} MB).
{" ".join(v for _, v in parts if v)}
"""
    write_section("Memory peak", body)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--weights", choices=list(SCENARIOS), default="none")
    parser.add_argument("--revs", default="dbb2cba^,HEAD", help="BEFORE,AFTER git revisions")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--folder", help="image folder to reuse or fill (default: a temp dir)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--from-json", action="store_true", help="only write the section again")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.one:  # a child: autofreeze from PYTHONPATH, never this checkout's
        print(json.dumps(one_study(Path(args.one))))
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.from_json:
        return write_report(results)
    args.folder = args.folder or tempfile.mkdtemp(prefix="autofreeze-memory-images-")
    results[args.weights] = measure(args)  # the other scenario's figures are kept
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    write_report(results)
    say(f"image folder kept: {args.folder} (reuse with --folder)")


if __name__ == "__main__":
    main()
