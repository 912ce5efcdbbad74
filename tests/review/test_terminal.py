"""What a search shows on stderr: a live area on a terminal, a few lines in a log, nothing with
--quiet, every epoch with -v; tables that fit 100 columns (every column with --wide); a spent
budget said with the flag that raises it; trials --sort/--top/--state; the ETA from measured
trial costs; a trial at its last epoch never pruned. Real tiny studies, through the CLI."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autofreeze.review.format import duration
from autofreeze.review.summary import COMPARISON_COLUMNS, TRIAL_COLUMNS
from autofreeze.review.tables import LABELS
from autofreeze.review.timing import eta
from autofreeze.study import records
from autofreeze.study.storage import load_existing_study
from tests.commands import invoke
from tests.studies import write_study

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def load(config: Path, name: str) -> optuna.Study:
    return load_existing_study(f"sqlite:///{config.parent / name}.db", name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One folder for every study here: its source weights are pretrained once."""
    return tmp_path_factory.mktemp("terminal")


@pytest.fixture(scope="module")
def searched(folder):
    """A tiny study searched through the CLI, where stderr is no terminal (as in a log)."""
    config = write_study(folder, "tiny", n_trials=9, epochs=3)
    result = invoke("search", str(config))
    assert result.exit_code == 0, result.output
    return config, result


def header(table: str) -> list[str]:
    return table.splitlines()[0].split()


# -- not a terminal: a few plain lines -------------------------------------------------------
def test_a_search_in_a_log_prints_a_few_lines_not_one_per_epoch(searched):
    _, result = searched
    lines = result.stderr.splitlines()
    # one line per epoch and one per trial (what -v prints) would be 9 * (3 + 1) = 36 lines
    assert len(lines) < 20, result.stderr
    assert not [line for line in lines if re.search(r"epoch \d/3", line)]
    assert lines[-1].startswith("9/9 trials done (") and "; best val_accuracy=" in lines[-1]
    best = [line for line in lines if line.startswith("new best val_accuracy=")]
    assert best and "trial 0 · baseline linear_probe: all 5 blocks frozen" in best[0]
    assert len([line for line in lines if line.startswith("enqueued baseline ")]) == 1


def test_quiet_prints_nothing_on_stderr_and_verbose_prints_every_epoch(folder):
    config = write_study(folder, "quiet", n_trials=2, epochs=2)
    result = invoke("search", str(config), "--quiet")
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("study quiet: val_accuracy (maximize), 2 finished trials")
    loud = write_study(folder, "loud", n_trials=2, epochs=2)
    result = invoke("search", str(loud), "-v")
    assert result.exit_code == 0, result.output
    # epoch 1 is not validated (the pruner reads epoch 2 on, the value the last)
    assert "  #0 linear_probe epoch 1/2 [static] (not validated)" in result.stderr
    assert "  #0 linear_probe epoch 2/2 [static] val_accuracy=" in result.stderr
    assert "#1 searched complete value=" in result.stderr  # 2 trials: one recipe, one sampled
    assert invoke("search", str(loud), "-q", "-v").exit_code == 2


@pytest.mark.slow
def test_the_parent_of_workers_shows_none_of_their_epoch_lines(folder):
    config = write_study(folder, "pair", n_trials=4, epochs=2)
    result = invoke("search", str(config), "--workers", "2")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "starting 2 workers: cpu0 (cpu, 1 threads), cpu1 (cpu, 1 threads)" in lines
    assert not [line for line in lines if re.search(r"epoch \d/2|worker done", line)], lines
    assert lines[-1].startswith("4/4 trials done (")


# -- a terminal: the live area -----------------------------------------------------------------
@pytest.mark.slow
def test_on_a_terminal_the_live_area_shows_the_running_trial_and_the_best(folder):
    config = write_study(folder, "live", n_trials=3, epochs=6, per_class=12)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "search", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=dict(os.environ, TERM="xterm-256color", HF_HUB_OFFLINE="1"),
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    screen = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    assert re.search(r"\d/3 trials done, 1 running, [\d.ms]+ elapsed, ETA ", screen), screen
    # its epoch, and its metric once an epoch was validated (from epoch 4 of 6, the pruner's)
    running = r"#\d \w+ (epoch \d/6 (val_accuracy=\d\.\d{4} )?|starting )"
    assert re.search(running, screen), screen
    assert "best val_accuracy=" in screen and "trial 0 · baseline linear_probe" in screen
    # a line per finished trial scrolls above the live area
    assert re.search(r"#0 linear_probe complete val_accuracy=\d\.\d{4} in [\d.]+s · k=5", screen)
    assert "3/3 trials done (3 complete)" in screen
    assert proc.stdout.read().decode().startswith("study live:")


# -- tables ----------------------------------------------------------------------------------
def test_the_comparison_fits_100_columns_and_a_spent_budget_says_how_to_raise_it(searched):
    config, result = searched
    table = result.stdout.splitlines()[1:]
    assert max(len(line) for line in table) <= 100, result.stdout
    assert header("\n".join(table)) == ["recipe", "state", "value", "time", "plan"]
    again = invoke("search", str(config), "--wide")
    assert again.exit_code == 0, again.output
    assert (
        "study 'tiny' has used its budget of 9 trials; run with --n-trials 19 to run 10 more"
        in again.stderr
    )
    assert header("\n".join(again.stdout.splitlines()[1:])) == list(COMPARISON_COLUMNS)


def test_trials_fits_100_columns_and_wide_shows_every_column(searched):
    config, _ = searched
    text = invoke("trials", str(config)).stdout
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert header(text)[:6] == [LABELS.get(c, c) for c in ("number", "name", "state", "value")] + [
        "epochs",
        "time",
    ]
    assert len(text.splitlines()) == 2 + 9
    assert header(invoke("trials", str(config), "--wide").stdout) == list(TRIAL_COLUMNS)


def test_trials_sort_top_and_state_select_and_order_the_rows(searched):
    config, _ = searched
    study = load(config, "tiny")

    def rows(*args: str) -> list[dict]:
        result = invoke("trials", str(config), "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    best = rows("--sort", "value", "--top", "3")
    values = sorted((t.value for t in study.trials if t.value is not None), reverse=True)
    assert [r["value"] for r in best] == values[:3]
    cheap = rows("--sort", "seconds")
    assert [r["seconds"] for r in cheap] == sorted(t.user_attrs["seconds"] for t in study.trials)
    assert [r["number"] for r in rows("--sort", "number", "--reverse", "--top", "2")] == [8, 7]
    for states in (["complete"], ["pruned", "complete"], ["fail"]):
        args = [a for s in states for a in ("--state", s)]
        wanted = {s.upper() for s in states}
        got = rows(*args)
        assert {r["state"] for r in got} <= wanted
        assert len(got) == sum(t.state.name in wanted for t in study.trials)
    assert invoke("trials", str(config), "--sort", "colour").exit_code == 2
    assert invoke("trials", str(config), "--state", "lost").exit_code == 2


# -- time ------------------------------------------------------------------------------------
def test_durations_are_written_one_way():
    assert [duration(s) for s in (0.42, 12.34, 59.97, 245, 3725)] == [
        "0.4s",
        "12.3s",
        "1m00s",
        "4m05s",
        "1h02m",
    ]


def _trial(seconds, epochs, state=TrialState.COMPLETE, cache=None, baseline=None):
    attrs = {records.SECONDS: seconds}
    if cache:
        attrs[records.CACHE] = {"kind": cache, "boundary": 5, "source": "memory"}
    if baseline:
        attrs[records.BASELINE] = baseline
    return create_trial(
        state=state,
        value=0.5 if state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
        intermediate_values={e: 0.5 for e in range(1, epochs + 1)},
        user_attrs=attrs,
    )


def test_the_eta_uses_the_cost_of_trials_that_trained_a_backbone():
    study = optuna.create_study(direction="maximize")
    # the head-only recipe on cached features runs first: 0.1 s per epoch tells nothing
    study.add_trial(_trial(0.4, 4, cache="pooled", baseline="linear_probe"))

    def left(**kw):
        kw = {"n_trials": 10, "epochs": 4, "workers": 1, "reruns": 2, **kw}
        return eta(study.get_trials(), **kw)

    assert left() is None  # never from the first (cached) trial alone
    study.add_trial(_trial(8.0, 4, cache="prefix", baseline="full_finetune_low_lr"))  # 2.0 s
    study.add_trial(_trial(5.0, 2, TrialState.PRUNED))  # a searched trial pruned at epoch 2: 2.5
    study.add_trial(_trial(12.0, 4))  # 3.0 s per epoch
    study.add_trial(_trial(0.0, 1, TrialState.RUNNING))  # 3 epochs to go
    # median 2.5 s per epoch; 5 trials not started at the searched trials' mean of 3 epochs,
    # 3 epochs of the running one, then 2 re-runs in one process, each at the median time of
    # the complete trials that trained a backbone (8 s and 12 s)
    assert left() == pytest.approx(2.5 * (5 * 3 + 3) + 2 * 10.0)
    assert left(workers=2) == pytest.approx(2.5 * (5 * 3 + 3) / 2 + 2 * 10.0)
    assert left(n_trials=None) is None


# -- pruning ---------------------------------------------------------------------------------
class PrunesLate(optuna.pruners.BasePruner):
    """Prunes trial 1 from epoch 2 on, every other trial at epoch 3."""

    def prune(self, study, trial) -> bool:
        return (trial.last_step or 0) >= (2 if trial.number == 1 else 3)


def test_a_trial_at_its_last_epoch_is_not_pruned(folder, monkeypatch):
    """With 3 epochs, a pruner that would stop trials 0 and 2 at epoch 3 (their last) is not
    asked there: they ran every epoch and complete. Trial 1 is still pruned at epoch 2."""
    import autofreeze.search.trials
    import autofreeze.study.opening

    monkeypatch.setattr(autofreeze.study.opening, "make_pruner", lambda cfg: PrunesLate())
    monkeypatch.setattr(autofreeze.search.trials, "make_pruner", lambda cfg, _=0: PrunesLate())
    config = write_study(
        folder,
        "last",
        n_trials=3,
        epochs=3,
        study_extra='baselines = false\nsampler = "random"',
        search='boundary = 5\nschedules = ["static"]',
    )
    assert invoke("search", str(config), "-q").exit_code == 0
    found = load(config, "last").trials
    assert [(t.state.name, len(records.history(t))) for t in found] == [
        ("COMPLETE", 3),
        ("PRUNED", 2),
        ("COMPLETE", 3),
    ]
    assert all(PrunesLate().prune(None, t) for t in found)  # asked, it would prune every one
    assert [records.PRUNED_AT_EPOCH in t.user_attrs for t in found] == [False, True, False]


# -- what each time covers -------------------------------------------------------------------
def test_both_streams_name_the_search_time_and_agree_on_it(searched):
    _, result = searched
    end = result.stderr.splitlines()[-1]
    first = result.stdout.splitlines()[0]
    on_stderr = re.search(r" done \([^)]*\); search ([\d.hms]+); best ", end)
    on_stdout = re.search(
        r", 9 run now; search ([\d.hms]+), in all ([\d.hms]+) with the prep", first
    )
    assert on_stderr and on_stdout, (end, first)
    assert on_stderr.group(1) == on_stdout.group(1)


def test_the_json_result_gives_the_search_time_within_the_whole_time(folder):
    config = write_study(folder, "timed", n_trials=2, epochs=1)
    result = invoke("search", str(config), "--json", "-q")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert 0 < out["search_seconds"] <= out["seconds"]


# -- the ETA: what is left, never more ------------------------------------------------------
def _study(*trials) -> list:
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    return study.get_trials()


def test_a_time_budget_caps_the_eta_and_at_the_end_nothing_is_left():
    # four trials of 14 s (3.5 s an epoch) of a 40-trial study whose time budget is spent:
    # no trial starts, and no re-run fits in the 10 s left (a re-run costs a full trial, 14 s)
    done = _study(*(_trial(14.0, 4) for _ in range(4)))
    kw = {"n_trials": 34, "epochs": 4, "workers": 1, "reruns": 6}
    assert eta(done, **kw) == pytest.approx(3.5 * 4 * 30 + 6 * 14.0)  # by the count alone
    assert eta(done, **kw, budget_left=10.0, search_left=-2.0) == 0.0
    assert eta(done, **kw, budget_left=30.0, search_left=-2.0) == pytest.approx(2 * 14.0)
    # a running trial still ends: 3 epochs of it, however spent the search's share is
    running = _study(*(_trial(14.0, 4) for _ in range(3)), _trial(0.0, 1, TrialState.RUNNING))
    assert eta(running, **kw, budget_left=12.0, search_left=-2.0) == pytest.approx(3 * 3.5)
    # the search's share left holds two more trials of 14 s, then the re-runs' share
    assert eta(done, **kw, budget_left=60.0, search_left=28.0) == pytest.approx(28.0 + 2 * 14.0)
    # at the end: the count reached, nothing running, no re-run left
    end = _study(*(_trial(14.0, 4) for _ in range(6)))
    assert eta(end, n_trials=6, epochs=4, workers=1, reruns=0) == 0.0
    assert eta(end, n_trials=None, epochs=4) is None  # no count and no time budget


def test_a_rerun_costs_what_a_full_run_measured():
    # a pruned trial's epochs cost more (building and caching spread over 1 epoch): the
    # re-runs of the top plans are priced at the complete trials' median, 8 s
    trials = _study(_trial(8.0, 4), _trial(8.0, 4), _trial(6.0, 1, TrialState.PRUNED))
    assert eta(trials, n_trials=3, epochs=4, workers=1, reruns=2) == pytest.approx(2 * 8.0)


def test_during_the_reevaluation_the_progress_line_counts_reruns_not_running_trials(tmp_path):
    import io

    from rich.console import Console

    from autofreeze.config import load_config
    from autofreeze.review.terminal import Display, _Watcher
    from autofreeze.study.allowance import allowance

    cfg = load_config(write_study(tmp_path, "again", n_trials=8, epochs=4, reevaluate=2))
    a = allowance(cfg)
    assert (a.trials, a.reruns) == (6, 2)
    study = optuna.create_study(direction="maximize")
    for _ in range(6):
        study.add_trial(_trial(8.0, 4))
    display = Display(console=Console(file=io.StringIO()), poll=3600)
    watcher = _Watcher(display, study, cfg, workers=1, reevaluate=True)
    watcher.poll(status=False)
    records.add_rerun(study, 0, 1, 0.5, 8.0)  # one re-run done, one left at most
    watcher.poll(status=False)
    line = watcher.progress()
    assert line.startswith("6/6 trials done, re-evaluating: 1 of up to 2 re-runs done, ")
    assert "running" not in line and re.search(r", ETA up to [78]\.\ds$", line), line
    records.add_rerun(study, 1, 1, 0.5, 8.0)
    watcher.poll(status=False)
    assert watcher.progress().endswith(", ETA 0.0s")


def test_the_display_eta_holds_no_more_than_the_time_budget_left(tmp_path):
    import io

    from rich.console import Console

    from autofreeze.config import load_config
    from autofreeze.review.terminal import Display, _Watcher

    def watched(seconds: float, **fields) -> _Watcher:
        config = write_study(
            tmp_path, "timed", n_trials=40, epochs=4, study_extra='budget = "60s"', **fields
        )
        study = optuna.create_study(direction="maximize")
        for _ in range(4):
            study.add_trial(_trial(seconds, 4))
        display = Display(console=Console(file=io.StringIO()), poll=3600)
        watcher = _Watcher(display, study, load_config(config), workers=1, reevaluate=True)
        watcher.poll(status=False)
        return watcher

    # the study: n_trials = 40 and a 60 s budget of which four 14 s trials spent 56 s;
    # the 4 s left hold no trial (the loop starts none past half a typical one): the end.
    # By the count, 30 trials were left (1m26s said three seconds before the end).
    ended = watched(14.0)
    assert ended.left[0] == 0.0
    assert re.search(r"4/\d+ trials done, 0 running, .*, ETA 0\.0s$", ended.progress())
    # four 10 s trials: before 20 trials the search may spend the whole budget (the re-runs'
    # fifth is kept only after them), so 20 s of trials are left and then no re-run fits
    going = watched(10.0, reevaluate=1)
    assert going.reevaluations > 0 and going.left[0] == pytest.approx(20.0)
