"""Stopping a search: SIGTERM (what ``timeout``, SLURM and Kubernetes send first) as Ctrl-C is,
in the process that runs the trials, in the parent of worker processes and in the CLI; one
line on stderr; the next run resumes and its table counts a cut trial once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from autofreeze.cli import cli
from autofreeze.review.summary import comparison
from autofreeze.search import objective as objective_module
from autofreeze.search.signals import Interrupts, Stopped, on_stop
from autofreeze.search.workers import WorkerSpec, _ended, launch
from autofreeze.study import records
from tests.processes import STARTED, trials, wait_for
from tests.studies import write_study

RESUME = "run the same command to resume"
STOPPED_LINE = (
    "stopped by SIGTERM: finished trials are kept and an interrupted trial is re-queued; " + RESUME
)
INTERRUPTED_LINE = STOPPED_LINE.replace("stopped by SIGTERM", "interrupted")


def _kill_self_later(signum: int, after: float) -> threading.Timer:
    timer = threading.Timer(after, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


# -- the handlers, in this process ---------------------------------------------------------------
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_raises_stopped_and_the_previous_handler_comes_back(signum, code):
    seen: list[int] = []
    previous = signal.signal(signum, lambda s, f: seen.append(s))
    try:
        with pytest.raises(Stopped) as stop, on_stop():
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler runs at once; never reached
        assert (stop.value.signum, stop.value.exit_code) == (signum, code)
        assert isinstance(stop.value, KeyboardInterrupt)  # what winds a search down on Ctrl-C
        os.kill(os.getpid(), signum)  # the caller's own handler again
        assert seen == [signum]
    finally:
        signal.signal(signum, previous)


def test_a_signal_between_trials_is_held_one_inside_a_trial_cuts_it_and_a_second_is_noted():
    ran: list[str] = []

    def objective(trial: str) -> str:
        ran.append(trial)
        if trial == "long":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # cut at once: never slept out
        if trial == "bookkeeping":  # a cut trial being told: a second signal changes nothing
            os.kill(os.getpid(), signal.SIGINT)
        return trial

    with Interrupts() as interrupts:
        t0 = time.monotonic()
        with pytest.raises(Stopped) as stop:
            interrupts.cutting(objective)("long")
        assert stop.value.signum == signal.SIGTERM and time.monotonic() - t0 < 4
        assert objective("bookkeeping") == "bookkeeping"
        with pytest.raises(Stopped) as held:  # the loop's next check stops it, as the first
            interrupts.check()
        assert held.value.signum == signal.SIGTERM
    with Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)  # while Optuna creates the trial: held
        assert interrupts.signum == signal.SIGTERM
        with pytest.raises(Stopped):  # ... and the trial stops before it starts
            interrupts.cutting(objective)("next")
    assert ran == ["long", "bookkeeping"]


CHILD = """
import os, signal, sys, time
hits = []
def handle(signum, frame):
    hits.append(signum)
    print(f"got {signum}", file=sys.stderr, flush=True)
    if len(hits) == int(sys.argv[1]):
        sys.exit(128 + signum)
signal.signal(signal.SIGTERM, handle)
print(f"ready {os.getpid()}", file=sys.stderr, flush=True)
for _ in range(400):  # 20 s at most, whatever happens
    time.sleep(0.05)
"""


def _launch_stopped(stops_after: int, signals: int) -> tuple[list, float, int | None]:
    """``launch`` two children that exit on their ``stops_after``-th SIGTERM; send this
    process ``signals`` SIGTERMs once both are ready. Returns the lines, the seconds launch
    took after the first signal, and the signal it raised."""
    specs = [WorkerSpec(f"w{i}", "cpu", 1) for i in range(2)]
    lines: list[tuple[str, str]] = []
    sent: list[float] = []
    unhandled: list[int] = []

    def signal_when_ready() -> None:
        wait_for(lambda: sum("ready" in x for _, x in lines) == 2, 60, "both children")
        for _ in range(signals):
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)

    sender = threading.Thread(target=signal_when_ready, daemon=True)

    # a signal launch does not handle is noted, not pytest's end
    def note(signum: int, frame: object) -> None:
        unhandled.append(signum)

    previous = signal.signal(signal.SIGTERM, note)
    try:
        sender.start()
        with pytest.raises(KeyboardInterrupt) as stop:
            launch(
                specs,
                lambda spec: [sys.executable, "-c", CHILD, str(stops_after)],
                lambda label, line: lines.append((label, line)),
            )
        took = time.monotonic() - sent[0]
        assert signal.getsignal(signal.SIGTERM) is note  # the library caller's handler is back
    finally:
        sender.join(timeout=60)
        signal.signal(signal.SIGTERM, previous)
        for _, line in lines:
            if line.startswith("ready "):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[1]), signal.SIGKILL)
    assert not unhandled
    return lines, took, getattr(stop.value, "signum", None)


def test_the_parent_passes_sigterm_on_to_every_worker_waits_and_raises_it():
    lines, took, signum = _launch_stopped(stops_after=1, signals=1)
    assert signum == signal.SIGTERM
    assert sorted((label, x) for label, x in lines if x.startswith("got")) == [
        ("w0", f"got {int(signal.SIGTERM)}"),
        ("w1", f"got {int(signal.SIGTERM)}"),
    ]
    assert took < 10


def test_a_second_signal_ends_the_parents_wait_at_once():
    """Workers that take long to wind down (here: they ignore the first SIGTERM): the second
    one is passed on too and the parent stops without waiting out WIND_DOWN (60 s)."""
    lines, took, signum = _launch_stopped(stops_after=2, signals=2)
    assert signum == signal.SIGTERM and took < 10, took
    got = [label for label, x in lines if x.startswith("got")]
    assert sorted(got) == ["w0", "w0", "w1", "w1"]


def test_a_worker_stopped_on_its_own_is_named_so():
    assert _ended(143) == "was stopped by SIGTERM (exit code 143)"
    assert _ended(130) == "was stopped by SIGINT (exit code 130)"
    assert _ended(-9) == "was killed by SIGKILL"
    assert _ended(1) == "exited with code 1 (its last lines are above)"


def test_sigterm_outside_the_trials_exits_143_with_one_line(tmp_path):
    """The CLI handles SIGTERM for the whole command: here a worker waiting for its study."""
    url = f"sqlite:///{tmp_path}/empty.db"
    unhandled: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: unhandled.append(s))  # not pytest's
    timer = _kill_self_later(signal.SIGTERM, 1.0)
    try:
        result = CliRunner().invoke(
            cli, ["worker", "--storage", url, "--study-name", "later", "--wait", "6"]
        )
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)
    assert not unhandled and result.exit_code == 143, result.output
    assert result.stderr.strip().splitlines()[-1] == STOPPED_LINE
    assert result.stderr.count(RESUME) == 1


def test_the_final_table_shows_a_cut_recipe_once_as_its_rerun():
    """A recipe cut short and re-queued (``retry_of``) is counted once: the table shows its
    re-run, not a FAIL row beside it."""
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 1}, user_attrs={records.BASELINE: "gradual_unfreezing"})
    cut = study.ask()
    study.tell(cut, state=TrialState.FAIL)  # Ctrl-C or SIGTERM: no reason
    frozen = study.get_trials(deepcopy=False)[cut.number]
    study.enqueue_trial({"x": 1}, user_attrs=records.retry_attrs(frozen))
    rerun = study.ask()
    rerun.suggest_int("x", 0, 2)
    study.tell(rerun, 0.5)
    rows = [r for r in comparison(study) if r["recipe"] == "gradual_unfreezing"]
    assert [(r["state"], r["number"]) for r in rows] == [("COMPLETE", rerun.number)]
    assert len(comparison(study)) == 2  # BEST and the recipe


# -- the real command, signalled -----------------------------------------------------------------
EPOCHS = 10  # the signal lands between epochs 1 and 7: seconds of room on a loaded machine
BUDGET = 3


def _start(config: Path, log: Path, out: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "search", str(config), *args],
        stdin=subprocess.DEVNULL,
        stdout=out.open("w"),
        stderr=log.open("w"),
    )
    STARTED.append(proc)
    return proc


def _tiny(tmp_path: Path) -> tuple[Path, str]:
    """A tiny study of trials of a few seconds: its config and its storage URL."""
    config = write_study(
        tmp_path,
        "sig",
        n_trials=BUDGET,
        epochs=EPOCHS,
        pruner="none",
        weights="none",
        per_class=12,
    )
    return config, f"sqlite:///{tmp_path}/sig.db"


def _mid_trial(log: Path) -> None:
    """Return once the search's last epoch line (``-v``) is one of its trial's first epochs,
    three or more to go. Not from the study: a running trial's history is stored after its
    first epoch and then every 10 s (HISTORY_EVERY), so it said "epoch 1" to the end of the
    trial, and a signal sent then once found the trial finished (nothing cut)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = re.findall(rf" epoch (\d+)/{EPOCHS}\b", log.read_text())
        if done and 1 <= int(done[-1]) <= EPOCHS - 3:
            return
        time.sleep(0.02)
    raise AssertionError(f"no trial between its first and its last epochs: {log.read_text()}")


def _cut_and_requeued(url: str) -> list[int]:
    """The trials the signal cut (at least one), each re-queued once; nothing RUNNING."""
    after = trials(url, "sig")
    assert not [t.number for t in after if t.state == TrialState.RUNNING]
    cut = [t.number for t in after if t.state == TrialState.FAIL]
    assert cut
    for n in cut:
        assert not records.fail_reason(after[n])  # cut short, not failed: it does not count
        retries = [t for t in after if records.retry_of(t) == n]
        assert [t.state for t in retries] == [TrialState.WAITING], n
    return cut


def _budget_kept(final: list, cut: list[int]) -> None:
    """Every counted trial once: exactly the budget, nothing left RUNNING or WAITING, each cut
    trial's re-run finished, no recipe finished twice."""
    assert sum(records.counts(t) for t in final) == BUDGET
    assert not [t.number for t in final if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for n in cut:
        assert [t.state for t in final if records.retry_of(t) == n] == [TrialState.COMPLETE]
    recipes = [records.baseline(t) for t in final if records.counts(t) and records.baseline(t)]
    assert len(recipes) == len(set(recipes)), recipes


@pytest.mark.slow
def test_sigterm_mid_trial_requeues_it_and_the_next_run_resumes(tmp_path):
    """SIGTERM to ``autofreeze search``: exit 143, one line, the cut trial re-queued; the next
    run counts the budget once, and its table shows the cut recipe once. With workers: the
    parent passes a signal on (test_the_parent_passes_sigterm_on_to_every_worker), Ctrl-C
    mid-trial on SQLite (test_worker_kills.py) and SIGTERM on PostgreSQL (the soak in
    test_faults.py)."""
    config, url = _tiny(tmp_path)
    proc = _start(config, tmp_path / "a.log", tmp_path / "a.out", "-v")  # a line per epoch
    _mid_trial(tmp_path / "a.log")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    log = (tmp_path / "a.log").read_text()
    assert code == 143, log[-3000:]
    assert log.strip().splitlines()[-1] == STOPPED_LINE, log[-3000:]
    # said once at the end; -v also tells the cut trial's re-queueing, with the same hint
    told = [line for line in log.splitlines() if RESUME in line]
    assert [line for line in told if not re.match(r"interrupted trial \d", line)] == [
        STOPPED_LINE
    ], log
    cut = _cut_and_requeued(url)
    again = _start(config, tmp_path / "b.log", tmp_path / "b.out")
    assert again.wait(timeout=400) == 0, (tmp_path / "b.log").read_text()[-3000:]
    final = trials(url, "sig")
    _budget_kept(final, cut)
    table = (tmp_path / "b.out").read_text()
    assert "FAIL" not in table, table  # the cut trial is its re-run's row, counted once
    cut_recipes = {records.baseline(final[n]) for n in cut} - {None}
    assert cut_recipes, cut  # in one process the recipes run first: one is cut
    for recipe in cut_recipes:
        assert sum(line.startswith(recipe) for line in table.splitlines()) == 1, table


def test_ctrl_c_says_once_how_to_resume(tmp_path, monkeypatch):
    """``search`` in this process, Ctrl-C at a trial's second epoch (pressed where the trial
    records its history, every epoch): it said it twice, the re-queued trial's line and then
    the command's."""
    config, url = _tiny(tmp_path)
    write_history = records.write_history
    pressed: list[int] = []
    # every epoch's history written (epochs of the tiny study are shorter than HISTORY_EVERY)
    monkeypatch.setattr(objective_module, "HISTORY_EVERY", 0.0)

    def press_ctrl_c(trial: optuna.Trial, history: list) -> None:
        write_history(trial, history)
        if len(history) == 2 and not pressed:
            pressed.append(trial.number)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(records, "write_history", press_ctrl_c)
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert pressed and result.exit_code == 130, result.output
    assert result.stderr.count(RESUME) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == INTERRUPTED_LINE
    assert _cut_and_requeued(url) == pressed
