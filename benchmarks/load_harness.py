"""The load harness: many workers on one study, straight on PostgreSQL and through
``autofreeze proxy`` (Optuna's gRPC storage proxy), so that only the coordination is measured.

Run: flock /tmp/autofreeze-cpu.lock .venv/bin/python benchmarks/load_harness.py
     [--workers 8,32,64,128] [--threads 8] [--seconds 5] [--rounds 4] [--faults]
Writes benchmarks/results/load_harness.json and the section "Many workers through the storage
proxy" of docs/benchmarks.md. Needs PostgreSQL's server binaries (``initdb``, ``pg_ctl``): the
harness starts a PostgreSQL cluster of its own on a free port (the shared server allows 100
connections, fewer than 128 direct workers hold, and other people's tests use them), and
stops and removes it at the end.

**What runs.** Each worker runs autofreeze's real worker loop,
:func:`autofreeze.search.trials.run_trials`: the queue (retries first, claims that succeed for
one worker only), the global budget, heartbeats (in the database, or through the proxy), the
stale-trial retries, the trial records and the tell. Only the trainer is swapped: the
objective is :class:`SleepObjective`, autofreeze's own :class:`~autofreeze.search.objective.
Objective` with its ``_run`` (build the backbone, train it) replaced by a fixed sleep. Its
``__call__`` is kept (the budget check that refuses a trial which lost the race for the last
place, the trial's seconds), and the trial still suggests its plan from the study's search
space, records the plan, reports and records every epoch's history and records its result,
as a training does: the same storage calls, without the minutes of a GPU. The study's
sampler is ``random``: TPE's own computation runs on each worker's CPU on a cluster, and
here 128 workers share two cores. The figures of the dashboard (``[study] dashboard``) are
off: artifacts are not coordination.

**Processes times threads.** A worker process runs ``--threads`` workers in threads, each
with a storage of its own (its own connection pool, or its own gRPC channel), its own study
object, sampler and objective: what separate processes hold. The worker loop runs in a thread
as it is: its stop-signal handlers are installed in the main thread only
(:mod:`autofreeze.search.signals` installs none elsewhere), and nothing else in it is
per-process. The processes wait at a start line until all are ready, so that process start-up
is not in the rate.

**What is measured.** Trials per minute from the first trial's start to the last one's end,
against the ideal (workers / trial seconds); the time of every storage call by method (each
storage's methods timed where they reach the database or the proxy); the study database's
connections (``pg_stat_activity``, sampled); and the study's accounts: exactly the budget
counted, no trial lost (left running or waiting, or cut short and never retried), none run by
two workers, none counted twice (a trial and its retry both counted).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from autofreeze.search.objective import Objective  # noqa: E402
from autofreeze.study import records  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "load_harness.json"
TITLE = "Many workers through the storage proxy"
EPOCHS = 5  # epochs of a sleeping trial: one report and one history record each


# -- the worker's side ---------------------------------------------------------------------------
class SleepObjective(Objective):
    """autofreeze's objective with the training replaced by a sleep of ``seconds``: the plan is
    suggested from the study's space and recorded, every epoch reports the metric and records
    the history so far, the result is recorded; everything else of the trial is the real one
    (see the module)."""

    def __init__(self, prepared: Any, space: Any, seconds: float, backbone: Any) -> None:
        super().__init__(prepared, space)
        self.seconds = seconds
        self.backbone = backbone  # built once per process: write_plan reads its blocks
        self.ran: list[int] = []  # trials whose objective returned, in this worker

    def _run(self, trial: optuna.Trial) -> float:
        from autofreeze.core.train import EpochResult, FitResult

        plan = self.space.suggest(trial, wide=self._wide(trial))
        records.write_plan(trial, plan, self.backbone)
        seen: list[EpochResult] = []
        report = self._reporter(trial, plan, self.backbone, seen, prunable=False)
        value = 0.5 + 0.4 * random.Random(trial.number).random()
        step = self.seconds / EPOCHS
        for epoch in range(1, EPOCHS + 1):
            time.sleep(step)
            report(
                EpochResult(
                    epoch, "train", plan.boundary, 1.0 / epoch, 1.0 / epoch, value, step, 0.0
                )
            )
        records.write_result(trial, FitResult(seen, {"trainable_params": 1.0}, []))
        self.ran.append(trial.number)
        return value


# what Optuna's in-process cache in front of an RDBStorage calls (each one transaction), under
# the name of the proxy's call that does the same work
RDB_CALLS = {
    "_create_new_trial": "create_new_trial",
    "_get_trials": "get_all_trials",
    "_set_trial_param": "set_trial_param",
    "_get_best_trial_id": "get_best_trial",
    "_get_stale_trial_ids": "(stale trials query)",
}
LOCAL = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "close",
         "wait_server_ready", "remove_session"}  # fmt: skip


def timed(storage: Any, calls: dict[str, list[float]]) -> Any:
    """Time every call of ``storage`` that reaches the database or the proxy, by the name of
    the proxy's call: the public methods of Optuna's storage class (``GrpcStorageProxy``: each
    one call to the proxy; ``RDBStorage``: each one transaction, those that delegate to a
    private one timed there, as Optuna's cache calls it: :data:`RDB_CALLS`). Wrapped on the
    instance: ``isinstance`` and the worker loop see the same object."""
    from optuna.storages import GrpcStorageProxy, RDBStorage

    if isinstance(storage, GrpcStorageProxy):
        names = {n: n for n, m in vars(GrpcStorageProxy).items() if callable(m)}
    else:
        names = {n: n for n, m in vars(RDBStorage).items() if callable(m)} | RDB_CALLS
        for public in ("create_new_trial", "get_all_trials", "set_trial_param", "get_best_trial"):
            names.pop(public)  # they call the private one
    for name, shown in names.items():
        if shown in LOCAL or (name.startswith("_") and name not in RDB_CALLS):
            continue
        setattr(storage, name, _timer(getattr(storage, name), calls[shown]))
    return storage


def _timer(method: Any, into: list[float]) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t0)  # list.append: safe across threads

    return call


def worker_process(args: argparse.Namespace) -> None:
    """One process of ``args.threads`` workers on the study; its accounts go to ``args.out``."""
    from autofreeze.runs.prepare import prepare
    from autofreeze.search.observer import Observers, Run
    from autofreeze.search.run import search_space
    from autofreeze.search.trials import run_trials
    from autofreeze.study import open_study, stored_config
    from autofreeze.study.queue import StudyOnStorage
    from autofreeze.study.storage import (
        load_existing_study,
        open_storage,
        set_heartbeat,
        storage_lost,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = open_storage(args.url, attempts=5)
    cfg = stored_config(load_existing_study(args.url, args.study, storage=first), args.url)
    prepared = prepare(cfg)
    space = search_space(prepared)
    from autofreeze.plan import FreezePlan

    backbone = prepared.backbone(FreezePlan(boundary=0))
    calls: dict[str, list[float]] = defaultdict(list)
    workers, errors = [], []
    for i in range(args.threads):
        label = f"{args.label}.{i}"
        try:  # what `autofreeze worker` does (autofreeze.search.run.join_study), but the trainer
            storage = timed(open_storage(args.url, attempts=args.attempts), calls)
            set_heartbeat(storage, cfg.study.heartbeat)
            run = Run(StudyOnStorage(open_study(cfg, storage), storage), cfg)
        except Exception as exc:  # noqa: BLE001 - said as the user sees it: one line
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        workers.append((label, run, SleepObjective(prepared, space, args.seconds, backbone)))
    Path(args.ready).write_text(str(os.getpid()))
    while not Path(args.go).exists():
        time.sleep(0.05)
    ran: dict[str, list[int]] = {}

    def work(label: str, run: Any, objective: SleepObjective) -> None:
        try:
            run_trials(run, objective, Observers(), lambda _: None, label, poll=1.0)
        except Exception as exc:  # noqa: BLE001 - as `autofreeze worker` says it (join_study)
            lost = storage_lost(exc)
            said = f"lost the study database ({lost})" if lost else f"{type(exc).__name__}: {exc}"
            errors.append(f"{label}: {' '.join(said.split())[:300]}")
        ran[label] = objective.ran

    threads = [threading.Thread(target=work, args=w) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {"ran": ran, "errors": errors, "calls": {k: v for k, v in calls.items() if v}}
    Path(args.out).write_text(json.dumps(out))


# -- the coordinator's side ----------------------------------------------------------------------
class Cluster:
    """The harness's PostgreSQL: a cluster of its own (see the module), one database per run."""

    def __init__(self, max_connections: int) -> None:
        from tests.processes import start_pg_cluster

        self.max_connections = max_connections
        self.folder, self.admin = start_pg_cluster(max_connections)
        self.watch: Any = None
        self.connections("/none")  # held before any worker connects

    def database(self) -> str:
        import psycopg

        name = f"af_load_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.admin.rsplit("/", 1)[0] + f"/{name}"

    def connections(self, db_url: str) -> int:
        """The study database's connections, asked on a connection held from the start (a
        full server refuses a new one)."""
        import psycopg

        if self.watch is None:
            self.watch = psycopg.connect(self.admin, autocommit=True)
        row = self.watch.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
            (db_url.rsplit("/", 1)[1],),
        ).fetchone()
        return int(row[0])

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.admin) as con:
            return str(con.execute("SHOW server_version").fetchone()[0]).split()[0]

    def stop(self) -> None:
        from tests.processes import stop_pg_cluster

        if self.watch is not None:
            self.watch.close()
        stop_pg_cluster(self.folder)


def prepare(folder: Path, name: str, db_url: str, n_trials: int, heartbeat: int) -> None:
    """The study as `autofreeze search` prepares it: config stored, first plans queued."""
    from autofreeze.config import load_config
    from autofreeze.progress import quiet
    from autofreeze.search.run import prepare_study
    from tests.studies import write_study

    config = write_study(
        folder,
        name,
        n_trials=n_trials,
        epochs=EPOCHS,
        pruner="none",
        study_extra=f'sampler = "random"\nheartbeat = {heartbeat}',
    )
    on, _, _ = prepare_study(load_config(config, {"study.storage": db_url}), progress=quiet)
    engine = getattr(on.storage, "engine", None)
    if engine is not None:
        engine.dispose()  # the coordinator holds no connection while the workers run


def launch(url: str, name: str, workers: int, args: argparse.Namespace, tmp: Path) -> list[Any]:
    """Worker processes of ``args.threads`` workers each (the last one the rest), waiting at
    the start line ``tmp/go``."""
    procs = []
    for i, start in enumerate(range(0, workers, args.threads)):
        threads = min(args.threads, workers - start)
        command = [
            sys.executable, __file__, "worker", "--url", url, "--study", name,
            "--threads", str(threads), "--label", f"p{i}", "--seconds", str(args.seconds),
            "--attempts", str(args.attempts), "--ready", str(tmp / f"ready{i}"),
            "--go", str(tmp / "go"), "--out", str(tmp / f"out{i}.json"),
        ]  # fmt: skip
        log = (tmp / f"worker{i}.log").open("w")
        procs.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=log, stdout=log))
    return procs


def run_case(cluster: Cluster, mode: str, workers: int, args: argparse.Namespace,
             fault: str = "", heartbeat: int = 20) -> dict[str, Any]:  # fmt: skip
    """One study of ``workers`` workers, ``mode`` "direct" or "proxy", with an optional fault
    ("proxy-kill", "worker-kill"); its figures and accounts."""
    from tests.processes import restart_proxy, start_proxy

    db_url = cluster.database()
    name = f"{mode}{workers}{fault.replace('-', '')}"
    n_trials = workers * args.rounds
    tmp = Path(tempfile.mkdtemp(prefix=f"af_load_{name}_"))
    prepare(tmp, name, db_url, n_trials, heartbeat)
    proxy, url = (None, db_url)
    if mode == "proxy":
        proxy, url = start_proxy(db_url, tmp / "proxy.log")
    procs = launch(url, name, workers, args, tmp)
    deadline = time.monotonic() + 600
    while not all((tmp / f"ready{i}").exists() for i in range(len(procs))):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"a worker process did not start: see {tmp}")
        time.sleep(0.2)
    ideal = args.rounds * args.seconds
    samples, events = [], []
    busy0 = cpu_busy()
    (tmp / "go").write_text("")
    t0 = time.monotonic()
    killed: list[int] = []
    rng = random.Random(workers)
    fault_at = t0 + ideal * rng.uniform(0.3, 0.6)
    give_up = t0 + 4 * ideal + 120  # a study that cannot finish (workers died) is cut here
    while any(p.poll() is None for p in procs):
        if time.monotonic() > give_up:
            for p in procs:
                p.kill()
                p.wait()
            events.append(f"not finished after {give_up - t0:.0f}s: worker processes killed")
            break
        samples.append(cluster.connections(db_url))
        if fault and not events and time.monotonic() >= fault_at:
            events.append(inject(fault, proxy, procs, rng, killed, args))
            if fault == "proxy-kill":
                time.sleep(args.downtime)
                proxy = restart_proxy(db_url, url, tmp / "proxy2.log")
                events.append(f"proxy restarted on the same port after {args.downtime:.0f}s")
        time.sleep(0.5)
    wall = time.monotonic() - t0
    busy = cpu_busy() - busy0
    outs = [
        json.loads((tmp / f"out{i}.json").read_text())
        for i in range(len(procs))
        if i not in killed and (tmp / f"out{i}.json").exists()
    ]
    if proxy is not None:
        proxy.terminate()
        proxy.wait(timeout=30)
    result = {
        "mode": mode, "workers": workers, "processes": len(procs), "fault": fault,
        "events": events, "budget": n_trials, "wall_seconds": round(wall, 1),
        "connections_max": max(samples), "connections_median": sorted(samples)[len(samples) // 2],
        **accounts(db_url, name, n_trials, outs, workers, args.seconds),
        "calls": call_stats(outs),
        "cpu_busy_seconds": round(busy, 1),
        "errors": sorted({e for o in outs for e in o["errors"]}),
        "tracebacks": sum(
            (tmp / f"worker{i}.log").read_text().count("Traceback") for i in range(len(procs))
        ),
        "exit_codes": [p.returncode for p in procs],
    }  # fmt: skip
    drop(cluster, db_url)
    return result


def cpu_busy() -> float:
    """CPU seconds the whole machine has been busy (/proc/stat: user, nice, system, irq,
    softirq, steal over every core): the workers, the proxy and PostgreSQL together, which on
    this machine share its cores."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_line(results: dict[str, Any]) -> list[str]:
    """What the coordination costs the machine a trial, and the rate its cores allow."""
    rows = [r for r in results["load"] if r.get("cpu_busy_seconds") and r["counted"]]
    if not rows:
        return []
    cores = os.cpu_count() or 1
    parts = []
    for r in rows:
        per = r["cpu_busy_seconds"] / r["counted"]
        most = cores / per * 60
        parts.append(
            f"{r['workers']} {r['mode']}: {per:.2f} s a trial, at most {most:.0f}/min on "
            f"{cores} cores ({most / r['ideal_per_minute']:.0%} of its ideal)"
        )
    return ["", "CPU the coordination costs (the machine's busy time over the run, /proc/stat: "
            "workers, proxy and PostgreSQL together, who share these cores) a counted trial, and "
            "the rate the cores allow at that cost: " + "; ".join(parts) + "."]  # fmt: skip


def inject(fault: str, proxy: Any, procs: list[Any], rng: random.Random, killed: list[int],
           args: argparse.Namespace) -> str:  # fmt: skip
    """SIGKILL the proxy, or a tenth of the workers (whole processes, chosen at random)."""
    if fault == "proxy-kill":
        proxy.kill()
        proxy.wait()
        return "proxy SIGKILLed"
    per = args.threads
    n = max(1, round(0.1 * len(procs)))
    for i in rng.sample(range(len(procs)), n):
        procs[i].send_signal(signal.SIGKILL)
        killed.append(i)
    return f"SIGKILLed {n} of {len(procs)} worker processes ({n * per} workers)"


def drop(cluster: Cluster, db_url: str) -> None:
    import psycopg

    with psycopg.connect(cluster.admin, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{db_url.rsplit("/", 1)[1]}" WITH (FORCE)')


def accounts(db_url: str, name: str, n_trials: int, outs: list[dict[str, Any]], workers: int,
             seconds: float) -> dict[str, Any]:  # fmt: skip
    """The study read straight from the database: the rate and the accounts (see the module)."""
    from autofreeze.study.storage import load_existing_study, open_storage

    storage = open_storage(db_url)
    trials = load_existing_study(db_url, name, storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    counted = [t for t in trials if records.counts(t)]
    over = {t.number for t in trials if records.over_budget(t)}
    left = [
        t.number
        for t in trials
        if t.state == TrialState.RUNNING
        or (t.state == TrialState.WAITING and records.retry_of(t) not in over)
    ]
    cut = [t for t in trials if t.state == TrialState.FAIL and not records.counts(t)]
    cut = [t for t in cut if t.number not in over]
    chains = defaultdict(list)
    for t in trials:
        if records.is_retry(t) and records.retry_of(t) not in over:
            chains[records.retry_of(t)].append(t)
    lost = [t.number for t in cut if not any(records.counts(r) for r in chains[t.number])]
    twice = [n for n, rs in chains.items() if sum(map(records.counts, [trials[n], *rs])) > 1]
    ran = Counter(n for o in outs for numbers in o["ran"].values() for n in numbers)
    baselines = Counter(records.baseline(t) for t in counted if records.baseline(t))
    done = [t for t in counted if t.datetime_start and t.datetime_complete]
    span = datetime.timedelta(0)
    if done:
        span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    rate = len(counted) / span.total_seconds() * 60 if done else 0.0
    ideal = workers / seconds * 60
    return {
        "counted": len(counted), "budget_exact": len(counted) == n_trials,
        "trials_in_study": len(trials), "left_running_or_waiting": left, "lost": lost,
        "cut_short": [t.number for t in cut],
        "retries_of_cut": {t.number: len(chains[t.number]) for t in cut},
        "run_by_two_workers": [n for n, k in ran.items() if k > 1],
        "baselines_twice": [b for b, k in baselines.items() if k > 1],
        "counted_twice": twice, "over_budget": sorted(over),
        "span_seconds": round(span.total_seconds(), 2), "trials_per_minute": round(rate, 1),
        "ideal_per_minute": round(ideal, 1), "of_ideal": round(rate / ideal, 3),
    }  # fmt: skip


def call_stats(outs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    merged: dict[str, list[float]] = defaultdict(list)
    for o in outs:
        for method, times in o["calls"].items():
            merged[method].extend(times)
    stats = {}
    for method, times in sorted(merged.items()):
        times.sort()
        stats[method] = {
            "n": len(times),
            "p50_ms": round(1000 * times[len(times) // 2], 2),
            "p99_ms": round(1000 * times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)], 2),
        }
    return stats


def clean(result: dict[str, Any]) -> bool:
    """Nothing lost, run twice or counted twice, and the budget exact."""
    bad = ("left_running_or_waiting", "lost", "run_by_two_workers", "baselines_twice",
           "counted_twice")  # fmt: skip
    return result["budget_exact"] and not any(result[k] for k in bad)


def kind(fault: dict[str, Any]) -> str:
    return "max-connections" if fault["fault"].startswith("max_connections") else fault["fault"]


def save(results: dict[str, Any], args: argparse.Namespace) -> None:
    where = Path("/tmp/af_load_last.json") if args.no_report else RESULTS
    where.write_text(json.dumps(results, indent=1) + "\n")


def run_faults(args: argparse.Namespace, results: dict[str, Any]) -> list[dict[str, Any]]:
    """The faults, each on a study of its own: the proxy SIGKILLed and restarted on its port;
    a tenth of the workers SIGKILLed; and, on a cluster whose ``max_connections`` is below the
    worker count, the same workers straight on PostgreSQL and through the proxy."""
    faults = results["faults"]
    heartbeat = 2  # a killed worker's trial is stale after 6 s
    cluster = Cluster(args.max_connections)
    try:
        kill_args = argparse.Namespace(**{**vars(args), "threads": 2})
        for fault, workers, a in (("proxy-kill", 32, args), ("worker-kill", 20, kill_args)):
            if fault not in args.which:
                continue
            r = run_case(cluster, "proxy", workers, a, fault, heartbeat)
            faults.append(r)
            print(summary(r), flush=True)
            save(results, args)
    finally:
        cluster.stop()
    if "max-connections" not in args.which:
        return faults
    small = Cluster(args.small_connections)
    try:
        for mode in ("direct", "proxy"):
            r = run_case(small, mode, args.small_workers, args, "", heartbeat)
            r["fault"] = f"max_connections={args.small_connections}"
            faults.append(r)
            print(summary(r), flush=True)
            save(results, args)
            for line in r["errors"][:3]:
                print("   ", line, flush=True)
    finally:
        small.stop()
    return faults


KEY_CALLS = (
    "get_all_trials", "create_new_trial", "set_trial_state_values", "set_trial_system_attr",
    "get_trial",
)  # fmt: skip


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The section of docs/benchmarks.md: the command, the machine, the tables."""
    from benchmarks._report import write_section

    command = results["command"]
    lines = [
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Optuna {optuna.__version__}, PostgreSQL "
        f"{results.get('postgres', '?')} (a cluster of the harness's own, max_connections "
        f"{args.max_connections}, default settings otherwise). Every worker runs autofreeze's "
        f"real worker loop (queue, budget, heartbeats every 20 s, retries, records, tell) with "
        f"the trainer swapped for a sleep of {args.seconds:g} s in {EPOCHS} epochs (one report "
        f"and one history record each; `SleepObjective` in the script); {args.threads} workers "
        f"per process, each with its own storage; budget = workers x {args.rounds}. The ideal "
        "is workers / trial seconds; the rate counts from the first trial's start to the last "
        "one's end. `lost`, `twice` and `double` must be 0: trials left running or waiting, "
        "or cut short and never retried; run by two workers; counted with their retry.",
        "",
        "| workers | storage | trials/min | of ideal | proxy / direct | DB connections (max) "
        "| storage calls per trial | budget exact | lost / twice / double | errors / tracebacks |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    direct = {r["workers"]: r for r in results["load"] if r["mode"] == "direct"}
    for r in results["load"]:
        ratio = ""
        if (
            r["mode"] == "proxy"
            and r["workers"] in direct
            and direct[r["workers"]]["trials_per_minute"]
        ):
            ratio = f"{r['trials_per_minute'] / direct[r['workers']]['trials_per_minute']:.2f}x"
        lines.append(row(r, ratio))
    lines += cpu_line(results)
    for r in results["load"]:  # a study cut by the harness: its running trials are not lost
        for event in r["events"]:
            lines += ["", f"{r['workers']} workers, {r['mode']}: {event} (its running trials "
                      "count as left running; its calls were not written)."]  # fmt: skip
    if not any(kind(f) == "max-connections" for f in results["faults"]):
        lines += ["", "Not measured in this run: max_connections below the worker count."]
    lines += ["", "Storage calls by method (p50 / p99 ms, calls per trial):", "",
              "| workers | storage | " + " | ".join(KEY_CALLS) + " |",
              "| --- | --- |" + " --- |" * len(KEY_CALLS)]  # fmt: skip
    for r in results["load"]:
        cells = [cell(r, r["calls"].get(m)) for m in KEY_CALLS]
        lines.append(f"| {r['workers']} | {r['mode']} | " + " | ".join(cells) + " |")
    if results["faults"]:
        lines += ["", "Faults (heartbeat 2 s; each on a study of its own):", "",
                  "| fault | workers | storage | what happened | trials/min | of ideal | "
                  "budget exact | lost / twice / double | cut short: retries | errors / tb |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in results["faults"]:
            retries = ", ".join(f"#{n}: {k}" for n, k in r["retries_of_cut"].items()) or "none"
            lines.append(
                f"| {r['fault']} | {r['workers']} | {r['mode']} | {'; '.join(r['events']) or '-'} "
                f"| {r['trials_per_minute']:.0f} | {r['of_ideal']:.0%} | {r['budget_exact']} | "
                f"{losses(r)} | {retries} | {len(r['errors'])} / {r['tracebacks']} |"
            )
        for r in results["faults"]:
            if r["errors"]:
                lines += ["", f"What a worker says, {r['fault']}, {r['mode']} (first of "
                          f"{len(r['errors'])} lines, one per worker):", "",
                          "```", r["errors"][0], "```"]  # fmt: skip
    write_section(TITLE, "\n".join(lines))


def cell(r: dict[str, Any], c: dict[str, float] | None) -> str:
    """p50 / p99 ms (calls per trial)."""
    if c is None:
        return ""
    return f"{c['p50_ms']:.0f} / {c['p99_ms']:.0f} ({c['n'] / max(1, r['counted']):.1f})"


def losses(r: dict[str, Any]) -> str:
    lost = len(r["lost"]) + len(r["left_running_or_waiting"])
    twice = len(r["run_by_two_workers"]) + len(r["baselines_twice"])
    return f"{lost} / {twice} / {len(r['counted_twice'])}"


def row(r: dict[str, Any], ratio: str) -> str:
    per_trial = sum(c["n"] for c in r["calls"].values()) / max(1, r["counted"])
    return (
        f"| {r['workers']} | {r['mode']} | {r['trials_per_minute']:.0f} (ideal "
        f"{r['ideal_per_minute']:.0f}) | {r['of_ideal']:.0%} | {ratio} | {r['connections_max']} | "
        f"{per_trial:.0f} | {r['budget_exact']} ({r['counted']}/{r['budget']}) | {losses(r)} | "
        f"{len(r['errors'])} / {r['tracebacks']} |"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="run", choices=["run", "worker"])
    parser.add_argument("--workers", default="8,32,64,128", help="worker counts, side by side")
    parser.add_argument("--modes", default="direct,proxy")
    parser.add_argument("--threads", type=int, default=8, help="workers per process")
    parser.add_argument("--seconds", type=float, default=5.0, help="one trial's sleep")
    parser.add_argument("--rounds", type=int, default=4, help="budget: workers x rounds trials")
    parser.add_argument("--attempts", type=int, default=5, help="a worker's connection attempts")
    parser.add_argument("--max-connections", type=int, default=400)
    parser.add_argument("--faults", action="store_true", help="the faults after the load")
    parser.add_argument("--only-faults", action="store_true")
    parser.add_argument("--which", default="proxy-kill,worker-kill,max-connections")
    parser.add_argument("--small-connections", type=int, default=20)
    parser.add_argument("--small-workers", type=int, default=32)
    parser.add_argument("--downtime", type=float, default=3.0, help="the proxy's, killed")
    parser.add_argument("--no-report", action="store_true", help="print, write no files")
    parser.add_argument("--report-only", action="store_true", help="the section from the file")
    # a worker process's own (role "worker")
    for name in ("--url", "--study", "--label", "--ready", "--go", "--out"):
        parser.add_argument(name)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    if args.role == "worker":
        worker_process(args)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.report_only:  # the section again from the results file (e.g. a run cut short)
        report(json.loads(RESULTS.read_text()), args)
        return
    command = " ".join(["flock /tmp/autofreeze-cpu.lock .venv/bin/python",
                        "benchmarks/load_harness.py", *sys.argv[1:]])  # fmt: skip
    results: dict[str, Any] = {"command": command, "load": [], "faults": []}
    if args.only_faults and RESULTS.exists() and not args.no_report:  # the others' kept
        results = json.loads(RESULTS.read_text())
        results["faults"] = [f for f in results["faults"] if kind(f) not in args.which]
        results["command_faults"] = command
    if not args.only_faults:
        cluster = Cluster(args.max_connections)
        results["postgres"] = cluster.version()
        try:
            for workers in map(int, args.workers.split(",")):
                for mode in args.modes.split(","):
                    r = run_case(cluster, mode, workers, args)
                    results["load"].append(r)
                    print(summary(r), flush=True)
                    save(results, args)  # so far: a run cut short keeps what it measured
        finally:
            cluster.stop()
    if args.faults or args.only_faults:
        results["faults"] = run_faults(args, results)
    save(results, args)
    if not args.no_report:
        report(results, args)


def summary(r: dict[str, Any]) -> str:
    slow = max(r["calls"].items(), key=lambda kv: kv[1]["n"] * kv[1]["p50_ms"], default=("", {}))
    return (
        f"{r['mode']:6} {r['workers']:4} workers {r['fault'] or '':11} "
        f"{r['trials_per_minute']:7.1f}/min ({r['of_ideal']:.0%} of ideal) "
        f"connections max {r['connections_max']} clean={clean(r)} "
        f"errors={len(r['errors'])} tracebacks={r['tracebacks']} costliest={slow[0]} {slow[1]}"
    )


if __name__ == "__main__":
    main()
