"""Kill and resume: ``search --workers 2`` with SIGTERM, SIGINT or SIGKILL sent at a random
moment to the parent or to a worker, then the same command run again to the end; every round
checks that nothing was lost or counted twice.

Run: .venv/bin/python benchmarks/soak.py [--rounds 10] [--storage sqlite|postgresql|both]
     [--seed 0] [--epochs 4] [--trials 10] [--signals SIGTERM,SIGINT,SIGKILL]
Writes docs/benchmarks.md (section "Kill and resume soak"). PostgreSQL rounds need the server
at 127.0.0.1:5432 (user postgres, trust auth); each round gets a database of its own, dropped
after it. The test suite runs a short version (tests/search/test_faults.py).

Checked after each round (see :func:`violations`): exactly the budget counted, every baseline
finished exactly once, nothing RUNNING or WAITING, every trial cut short re-run by a retry,
no trial failed with a reason (nothing here diverges). After a SIGTERM or a SIGINT, also
before the resumed run (see :func:`fault_problems`): nothing left RUNNING once the faulted
search and its workers have stopped, and the exit code the signal gives (a signalled parent
143 or 130, a search whose worker alone was stopped 1), or 0 if the search had finished.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autofreeze.recipes import BASELINE_NAMES  # noqa: E402
from autofreeze.study.records import counts, over_budget  # noqa: E402
from benchmarks._report import write_section  # noqa: E402
from tests.processes import alive, children, drop_pg_database, new_pg_database  # noqa: E402
from tests.studies import write_study  # noqa: E402

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TARGETS = ("parent", "worker")
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}


@dataclass
class Round:
    storage: str
    target: str
    signal: str
    after: float  # seconds after the workers started
    exit_code: int | None = None  # of the faulted search
    resumed_code: int | None = None
    cut_short: int = 0  # trials that failed without a reason (all must have been re-run)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def violations(trials: list[optuna.trial.FrozenTrial], budget: int) -> list[str]:
    """What is wrong with a study that should have finished its budget cleanly."""
    problems = []
    counted = [t for t in trials if counts(t)]
    if len(counted) != budget:
        problems.append(f"{len(counted)} trials counted, budget {budget}")
    lost_race = {t.number for t in trials if over_budget(t)}  # never ran: another took the place
    left = [
        t.number
        for t in trials
        if t.state == TrialState.RUNNING
        or (t.state == TrialState.WAITING and t.user_attrs.get("retry_of") not in lost_race)
    ]
    if left:
        problems.append(f"trials left RUNNING or WAITING: {left}")
    ran = Counter(
        t.user_attrs["baseline"]
        for t in trials
        if t.state in FINISHED and "baseline" in t.user_attrs
    )
    for name in BASELINE_NAMES:
        if ran[name] != 1:
            problems.append(f"baseline {name} finished {ran[name]} times")
    retried = {t.user_attrs.get("retry_of") for t in trials} | {
        n for t in trials for n in t.system_attrs.get("retry_history", ())
    }
    for t in trials:
        if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs:
            problems.append(f"trial {t.number} failed: {t.user_attrs['fail_reason']}")
        elif t.state == TrialState.FAIL and t.number not in retried | lost_race:
            problems.append(f"trial {t.number} was cut short and never re-run")
    return problems


def fault_problems(r: Round, trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """What is wrong right after a SIGTERM or SIGINT, before the resumed run: the study as the
    signal left it (``trials``) and the faulted search's exit code. A SIGKILL is not checked
    here: a killed worker's trial stays RUNNING until its heartbeat goes stale."""
    if r.signal == "SIGKILL":
        return []
    problems = []
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        problems.append(f"trials left RUNNING by {r.signal}: {running}")
    stopped = 128 + SIGNALS[r.signal] if r.target == "parent" else 1
    if r.exit_code not in (stopped, 0):
        problems.append(f"{r.signal} to the {r.target}: exit {r.exit_code}, not {stopped}")
    return problems


def _search(config: Path, url: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "search", str(config), "--workers", "2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, "AUTOFREEZE_STORAGE": url},
    )


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            for p in pids:
                if alive(p):
                    os.kill(p, signal.SIGKILL)
            raise RuntimeError("processes still running after the fault: killed")
        time.sleep(0.2)


def soak_round(  # noqa: PLR0913 - one round's settings, each from soak()'s command line
    folder: Path,
    index: int,
    storage: str,
    rng: random.Random,
    trials: int,
    epochs: int,
    latest: float = 20.0,
    signals: Sequence[str] = tuple(SIGNALS),
) -> Round:
    """One study: a search with one fault (a signal of ``signals``) at a random moment (1 to
    ``latest`` seconds after its workers started), then the same search resumed."""
    url = f"sqlite:///{folder}/soak{index}.db" if storage == "sqlite" else new_pg_database()
    name = f"soak{index}"
    # the product's default: the dashboard output on, so faults meet it too
    config = write_study(
        folder,
        name,
        n_trials=trials,
        epochs=epochs,
        pruner="none",
        study_extra="heartbeat = 2",
        dashboard=True,
    )
    r = Round(storage, rng.choice(TARGETS), rng.choice(list(signals)), rng.uniform(1.0, latest))
    t0 = time.perf_counter()
    try:
        proc = _search(config, url, folder / f"{name}.log")
        deadline = time.monotonic() + 300
        while len(workers := children(proc.pid)) < 2 and proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers never started")
            time.sleep(0.1)
        time.sleep(r.after)
        victim = proc.pid if r.target == "parent" else rng.choice(workers)
        if alive(victim):
            os.kill(victim, SIGNALS[r.signal])
        r.exit_code = proc.wait(timeout=600)
        _wait_gone(workers, 600)  # orphans finish their trial, then stop
        faulted = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
        early = fault_problems(r, faulted)
        resumed = _search(config, url, folder / f"{name}.resumed.log")
        r.resumed_code = resumed.wait(timeout=900)
        found = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
        r.cut_short = sum(
            t.state == TrialState.FAIL and not counts(t) and not over_budget(t) for t in found
        )
        r.problems = early + violations(found, trials)
        if r.resumed_code != 0:
            tail = (folder / f"{name}.resumed.log").read_text().strip().splitlines()[-1:]
            r.problems.append(f"the resumed search exited {r.resumed_code}: {tail}")
    finally:
        if storage == "postgresql":
            drop_pg_database(url)
    r.seconds = time.perf_counter() - t0
    return r


def soak(  # noqa: PLR0913 - the command line's settings, and the test's short version's
    rounds: int,
    storages: list[str],
    seed: int = 0,
    trials: int = 10,
    epochs: int = 4,
    progress=print,
    latest: float = 20.0,
    signals: Sequence[str] = tuple(SIGNALS),
    cycle: bool = False,
) -> list[Round]:
    """``rounds`` rounds, the storages taken in turn; each round's signal is drawn from
    ``signals``, or with ``cycle`` taken in turn (the test suite's short version, which must
    meet each of them)."""
    rng = random.Random(seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            storage = storages[i % len(storages)]
            chosen = [signals[i % len(signals)]] if cycle else signals
            r = soak_round(Path(tmp), i, storage, rng, trials, epochs, latest, chosen)
            progress(
                f"round {i + 1}/{rounds} {storage}: {r.signal} to the {r.target} after "
                f"{r.after:.1f}s -> exit {r.exit_code}, resumed {r.resumed_code}, "
                f"{r.cut_short} cut short, {'OK' if not r.problems else r.problems}"
            )
            results.append(r)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--storage", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--signals", default=",".join(SIGNALS), help="the signals drawn from, comma-separated"
    )
    args = parser.parse_args()
    storages = ["sqlite", "postgresql"] if args.storage == "both" else [args.storage]
    signals = [s.strip().upper() for s in args.signals.split(",") if s.strip()]
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown or not signals:
        parser.error(
            f"--signals: {', '.join(unknown) or 'none given'}; choose from {', '.join(SIGNALS)}"
        )
    t0 = time.perf_counter()
    results = soak(
        args.rounds,
        storages,
        args.seed,
        args.trials,
        args.epochs,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        signals=signals,
    )
    minutes = (time.perf_counter() - t0) / 60
    bad = [r for r in results if r.problems]
    rows = "\n".join(
        f"| {i + 1} | {r.storage} | {r.signal} → {r.target} at {r.after:.1f} s | {r.exit_code} "
        f"| {r.cut_short} | {r.seconds:.0f} | {'; '.join(r.problems) or 'none'} |"
        for i, r in enumerate(results)
    )
    chosen = "" if signals == list(SIGNALS) else f" --signals {','.join(signals)}"
    command = (
        f"`.venv/bin/python benchmarks/soak.py --rounds {args.rounds} --storage {args.storage} "
        f"--seed {args.seed} --trials {args.trials} --epochs {args.epochs}{chosen}`"
    )
    drawn = Counter(r.signal for r in results)
    faults = ", ".join(f"{drawn[s]} {s}" for s in SIGNALS if drawn[s])
    body = f"""
{command} on {platform.machine()}, {os.cpu_count()} cores, CPU only; {minutes:.1f} min in all.
Each round is a new study of {args.trials} trials (resnet10t, 16 px, {args.epochs} epochs,
heartbeat 2 s) run by `search --workers 2`; one signal ({", ".join(signals)}, drawn at random,
seeded) goes to the parent or to a worker at a random moment, then the same command is run
again to the end. A round passes when, after a SIGTERM or SIGINT, nothing is left RUNNING by
the stopped search and it exited with the signal's code (143 or 130 for the parent, 1 when a
worker alone was stopped, 0 if the search had already finished), and when, after the resumed
run, exactly the budget is counted, every baseline finished once, nothing is left RUNNING or
WAITING, and every trial cut short was re-run. The faults drawn: {faults}.

**{len(results) - len(bad)} of {len(results)} rounds passed.**

| round | storage | fault | exit | cut short | seconds | problems |
| --- | --- | --- | --- | --- | --- | --- |
{rows}
"""
    write_section("Kill and resume soak", body)
    print(f"{len(results) - len(bad)}/{len(results)} rounds passed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
