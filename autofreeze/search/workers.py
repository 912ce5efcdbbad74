"""Device discovery and one-worker-process-per-device fan-out.

Each GPU worker sees only its GPU (``CUDA_VISIBLE_DEVICES``) and trains on ``cuda``; CPU
workers split the cores (``torch.set_num_threads``). Discovery takes the visible GPU list as an
input, so the multi-GPU path is exercised without GPUs. Workers coordinate only through the
study database; the parent streams their progress, forwards Ctrl-C and SIGTERM and waits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from autofreeze.errors import ConfigError, WorkerError
from autofreeze.progress import DETAIL_TAG, detail
from autofreeze.search.signals import STOP_SIGNALS, Stopped, on_stop, stopped

WIND_DOWN = 60.0  # seconds a stopped worker gets to re-queue its trial and exit


@dataclass(frozen=True)
class WorkerSpec:
    """One worker: a label, the torch device it trains on, its threads and extra env."""

    label: str
    device: str
    threads: int
    env: dict[str, str] = field(default_factory=dict)


def visible_gpus() -> list[str]:
    """GPU ids this process can use (respects an existing ``CUDA_VISIBLE_DEVICES``)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i.strip() for i in env.split(",") if i.strip()] if env else []
    count = torch.cuda.device_count()
    return ids[:count] if ids else [str(i) for i in range(count)]


def plan_workers(
    devices: str = "cpu",
    workers: int | None = None,
    *,
    gpus: Sequence[str] | None = None,
    cores: int | None = None,
) -> list[WorkerSpec]:
    """Turn ``--devices`` and ``--workers`` into worker specs.

    Args:
        devices: ``auto`` (every visible GPU, else CPU workers), ``cpu``, or GPU ids ``0,1,3``.
        workers: CPU workers (default 1); with GPUs, at most one per GPU is started.
        gpus: the visible GPU ids (default: :func:`visible_gpus`); injected by tests.
        cores: CPU cores to share between CPU workers (default: ``os.cpu_count()``).
    """
    gpus = list(visible_gpus() if gpus is None else gpus)
    cores = cores or os.cpu_count() or 1
    spec = devices.strip().lower()
    if spec == "auto":
        chosen = gpus
    elif spec == "cpu":
        chosen = []
    else:
        chosen = [d.strip() for d in spec.split(",") if d.strip()]
        unknown = [d for d in chosen if d not in gpus]
        if unknown or len(set(chosen)) != len(chosen):
            raise ConfigError(
                f"--devices {devices!r}: GPU {unknown[0] if unknown else 'listed twice'} is not "
                f"available (visible GPUs: {', '.join(gpus) or 'none'}); use --devices cpu or auto"
            )
    if chosen:
        if workers is not None and workers > len(chosen):
            raise ConfigError(
                f"--workers {workers} exceeds the {len(chosen)} GPUs chosen (one worker per GPU)"
            )
        chosen = chosen[: workers or len(chosen)]
        return [WorkerSpec(f"gpu{g}", "cuda", 1, {"CUDA_VISIBLE_DEVICES": g}) for g in chosen]
    n = workers or 1
    if n < 1:
        raise ConfigError("--workers must be at least 1")
    threads = max(1, cores // n)
    # CPU workers must not touch a GPU even if the machine has one
    return [WorkerSpec(f"cpu{i}", "cpu", threads, {"CUDA_VISIBLE_DEVICES": ""}) for i in range(n)]


def launch(
    specs: Sequence[WorkerSpec],
    command: Callable[[WorkerSpec], list[str]],
    on_line: Callable[[str, str], None],
    env: dict[str, str] | None = None,
) -> list[int]:
    """Start one process per spec, stream their stderr lines, forward a stop signal, wait for
    all.

    Returns the exit codes in spec order. Ctrl-C (SIGINT) or SIGTERM in the parent is passed
    on to every worker as the same signal (each finishes its bookkeeping: the trial it was
    running is marked failed and re-queued), then the parent waits for them and raises
    :class:`~autofreeze.search.signals.Stopped` (a ``KeyboardInterrupt``) for that signal.
    """
    procs: list[subprocess.Popen[str]] = []
    threads: list[threading.Thread] = []
    for spec in specs:
        child_env = {
            **os.environ,
            **(env or {}),
            **spec.env,
            "AUTOFREEZE_WORKER": spec.label,
            "OMP_NUM_THREADS": str(spec.threads),
            "PYTHONUNBUFFERED": "1",
        }
        proc = subprocess.Popen(
            command(spec),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,  # a terminal's Ctrl-C reaches workers through us, once
        )
        procs.append(proc)
        t = threading.Thread(target=_pump, args=(proc, spec.label, on_line), daemon=True)
        t.start()
        threads.append(t)
    stop: Stopped | None = None
    waited = True
    with on_stop():  # SIGINT and SIGTERM raise Stopped while the workers run
        try:
            for proc in procs:
                proc.wait()
        except KeyboardInterrupt as exc:
            stop = stopped(exc)
            waited = _wind_down(procs, stop.signum)
    if waited:  # their last lines, before what the caller says
        for t in threads:
            t.join(timeout=5)
    if stop is not None:
        raise stop
    return [p.returncode for p in procs]


def _wind_down(procs: Sequence[subprocess.Popen[str]], signum: int) -> bool:
    """Pass the stop signal on to every worker and wait for each to re-queue its trial and
    exit (one that does not within ``WIND_DOWN`` seconds is killed; its trial is retried once
    its heartbeat goes stale); return whether they all ended. A second signal is passed on too
    and ends the wait at once: the workers were told, and each stops as soon as its
    bookkeeping is done."""
    _tell(procs, signum)
    try:
        for proc in procs:
            try:
                proc.wait(timeout=WIND_DOWN)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    except KeyboardInterrupt as again:
        _tell(procs, stopped(again).signum)
        return False
    return True


def _tell(procs: Sequence[subprocess.Popen[str]], signum: int) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signum)


def _pump(proc: subprocess.Popen[str], label: str, on_line: Callable[[str, str], None]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        on_line(label, line.rstrip("\n"))


def worker_command(spec: WorkerSpec, study_name: str) -> list[str]:
    """The ``autofreeze worker`` invocation of one spec: the study, the device, the threads.

    The worker runs the config stored in the study. The storage URL travels in
    ``AUTOFREEZE_STORAGE`` (see :func:`launch`'s ``env``), never on the command line, where
    ``ps`` would show its password. With ``--relay`` it shows nothing of its own and sends
    every line to the search, details tagged (see :func:`relay_line`).
    """
    return [
        sys.executable,
        "-m",
        "autofreeze",
        "worker",
        "--study-name",
        study_name,
        "--device",
        spec.device,
        "--threads",
        str(spec.threads),
        "--relay",
    ]


def relay_line(progress: Callable[[str], None], label: str, line: str) -> None:
    """A worker's line on the search's progress, prefixed with its label: a detail line (an
    epoch, a finished trial; tagged by the worker) as a detail, shown only with ``-v``."""
    if line.startswith(DETAIL_TAG):
        detail(progress, f"[{label}] {line[len(DETAIL_TAG) :]}")
    else:
        progress(f"[{label}] {line}")


def run_workers(
    specs: Sequence[WorkerSpec], study_name: str, url: str, progress: Callable[[str], None]
) -> None:
    """One ``autofreeze worker`` process per spec on a prepared study; wait for all of them."""
    cpu, cores = sum(s.device == "cpu" for s in specs), os.cpu_count() or 1
    if cpu > cores:  # measured: 8 workers on 2 cores ran 0.58x the trials per minute of 2
        progress(
            f"note: {cpu} CPU workers share {cores} cores, which is slower than {cores} "
            f"workers (docs/benchmarks.md, Many workers on SQLite); use --workers {cores}"
        )
    progress(
        f"starting {len(specs)} workers: "
        + ", ".join(f"{s.label} ({s.device}, {s.threads} threads)" for s in specs)
    )
    codes = launch(
        specs,
        lambda spec: worker_command(spec, study_name),
        lambda label, line: relay_line(progress, label, line),
        env={"AUTOFREEZE_STORAGE": url},
    )
    failed = [(s.label, c) for s, c in zip(specs, codes, strict=True) if c != 0]
    if failed:
        label, code = failed[0]
        raise WorkerError(
            f"worker {label} {_ended(code)}; the study is consistent: run the same command "
            "to resume"
        )


def _ended(code: int) -> str:
    """How a worker ended, from its exit code: stopped by a signal sent to it alone (its trial
    re-queued, 128 + the signal), killed (a negative code), or failed."""
    for signum in STOP_SIGNALS:
        if code in (128 + signum, -signum):
            return f"was stopped by {signal.Signals(signum).name} (exit code {code})"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code} (its last lines are above)"
