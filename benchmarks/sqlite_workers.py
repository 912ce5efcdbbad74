"""Many local workers on the default SQLite storage: does any trial fail on the database lock?

Run: .venv/bin/python benchmarks/sqlite_workers.py [--workers 8] [--trials 100] [--epochs 1]
Writes docs/benchmarks.md (section "Many workers on SQLite"). The trials are tiny (resnet10t,
16 px, 24 images) so that the storage, not training, is the bottleneck: the worst case for
SQLite's one-writer lock. 2 workers are measured in the same run for the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402
from tests.studies import write_study  # noqa: E402

LOCK_ERRORS = ("database is locked", "database table is locked")


def run(folder: Path, workers: int, trials: int, epochs: int) -> dict:
    name = f"w{workers}"
    config = write_study(folder, name, n_trials=trials, epochs=epochs, pruner="none")
    log = folder / f"{name}.log"
    t0 = time.perf_counter()
    with log.open("w") as err:
        code = subprocess.run(
            [sys.executable, "-m", "autofreeze", "search", str(config), "--workers", str(workers)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        ).returncode
    wall = time.perf_counter() - t0
    text = log.read_text()
    found = optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/{name}.db").trials
    done = [t for t in found if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return {
        "workers": workers,
        "exit": code,
        "finished": len(done),
        "failed": sum(
            t.state == TrialState.FAIL and not t.user_attrs.get("over_budget") for t in found
        ),
        "lost_race": sum(bool(t.user_attrs.get("over_budget")) for t in found),
        "locked": sum(text.count(e) for e in LOCK_ERRORS),
        "wall": wall,
        "per_minute": len(done) / wall * 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (2, args.workers):
            print(f"{workers} workers, {args.trials} trials ...", file=sys.stderr, flush=True)
            rows.append(run(Path(tmp), workers, args.trials, args.epochs))
            print(rows[-1], file=sys.stderr, flush=True)
    table = "\n".join(
        f"| {r['workers']} | {r['exit']} | {r['finished']} | {r['failed']} | {r['lost_race']} "
        f"| {r['locked']} "
        f"| {r['wall']:.0f} | {r['per_minute']:.1f} |"
        for r in rows
    )
    ratio = rows[1]["per_minute"] / rows[0]["per_minute"]
    body = f"""
`.venv/bin/python benchmarks/sqlite_workers.py --workers {args.workers} --trials {args.trials}
--epochs {args.epochs}` on {platform.machine()}, {os.cpu_count()} cores, CPU only. One
`search --workers N` on a new SQLite study of {args.trials} tiny trials (resnet10t, 16 px,
{args.epochs} epoch(s)): storage-bound, the worst case for SQLite's single writer. Every
transaction takes the write lock at its start (`BEGIN IMMEDIATE`) and waits up to 60 s for it.
"Lost the race" counts trials started when other workers had already taken the last of the
budget: they do not run and do not count (before this check, 8 workers ran 101 trials for a
budget of 100).

| workers | exit | finished | failed | lost race | "database is locked" | wall s | trials/min |
| --- | --- | --- | --- | --- | --- | --- | --- |
{table}

{args.workers} workers finished {ratio:.2f}x the trials per minute of 2 on this
{os.cpu_count()}-core machine (more workers than cores only share the cores). No trial failed
on the lock, so autofreeze does not steer local users away from SQLite at this count; workers
on several machines need PostgreSQL or MySQL (SQLite's locks do not hold on network file
systems).
"""
    if any(r["locked"] or r["failed"] or r["exit"] or r["finished"] != args.trials for r in rows):
        body = body.replace("No trial failed\non the lock", "SOME TRIALS FAILED (see the table)")
    write_section("Many workers on SQLite", body)
    print(table)


if __name__ == "__main__":
    main()
