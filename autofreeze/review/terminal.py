"""What ``search`` and ``worker`` show on stderr: a :class:`Display`, at three verbosities.

- ``--quiet``: nothing (the lines are held, and shown if the command fails: its context);
- default, on a terminal: a live area at the bottom (rich): the budget done, the running
  trials with their epoch and last metric (during the re-evaluation, the re-runs done), the
  best so far with its plan in words, elapsed and ETA; the notes and a line per finished
  trial scroll above it;
- default, not a terminal (CI, a log, a pipe): plain lines: the notes, a line per new best
  and per failed trial, a status line when ``STATUS_EVERY`` seconds passed without one, the end;
- ``-v``: every line as well: each epoch (:func:`progress.detail`) and a full line for each
  finished trial, with the best so far and the time left.

How the display learns about the trials: it reads them from the study's storage, every
``POLL`` seconds from a thread, in every mode. The running trials are the study's RUNNING
trials, their epoch and last metric their intermediate values; the finished ones are those
that finished since the last read; the display is the one writer of trial lines. One mechanism
serves a search running its trials in its own process, a search with one worker process per
device, and ``autofreeze worker`` on another machine, which shows the whole study whoever runs
its trials. It costs one read of the unfinished trials a second (Optuna's cached storage keeps
the finished ones); the objective and the trial loop need no hook: the search tells the
display only that a run started and ended (it is a
:class:`autofreeze.search.observer.SearchObserver`, handed to the search by the CLI). The
workers a search starts run with ``--relay``: they show nothing of their own and send their
lines to the search, each detail tagged (``progress.DETAIL_TAG``) for the search to show with
``-v`` only. Writing them keeps how a
worker notices that its parent died: its next line fails.

Time: the search's time runs from ``started`` to ``ended`` (its trials and the re-runs of the
top plans), the same quantity the end line and ``search``'s stdout line call "search"
(:attr:`Display.search_seconds`); the ETA is :func:`autofreeze.review.timing.eta`, made at
each read of the study and said the same way in every line.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from autofreeze.progress import DETAIL_TAG, lose_output, stderr_progress
from autofreeze.review.format import duration
from autofreeze.review.story import plan_words, trial_title
from autofreeze.review.summary import spent_note, trial_line
from autofreeze.review.tables import short_plan
from autofreeze.review.timing import FINISHED, epochs_run, eta
from autofreeze.study import best_trial, records
from autofreeze.study.allowance import allowance, search_share, search_spent, spent

QUIET, NORMAL, VERBOSE = 0, 1, 2
POLL = 1.0  # seconds between two reads of the study
STATUS_EVERY = 30.0  # seconds without a status line before a log gets one
HELD = 40  # lines --quiet keeps, to show if the command fails
SHOWN = 8  # running trials listed in the live area


def level(quiet: bool = False, verbose: bool = False) -> int:
    return QUIET if quiet else VERBOSE if verbose else NORMAL


def _value(t: FrozenTrial, metric: str) -> str:
    v = records.metric_value(t)
    return f"{metric}={v:.4f}" if v is not None else f"{metric}=-"


def best_words(t: FrozenTrial, metric: str) -> str:
    """``val_accuracy=0.9333: trial 7 · searched: blocks 0-1 of 5 frozen throughout; ...``"""
    plan = plan_words(records.plan(t), records.n_blocks(t))
    return f"{_value(t, metric)}: {trial_title(t)}: {plan}"


class Display:
    """Progress for the terminal: call it with a note, ``detail`` with a detail line; ``watch``
    follows a study's trials until ``unwatch``. As a context manager it stops following on an
    error and, with ``--quiet``, shows the lines it held back."""

    def __init__(
        self,
        verbosity: int = NORMAL,
        *,
        relay: bool = False,
        console: Console | None = None,
        poll: float = POLL,
        status_every: float = STATUS_EVERY,
    ) -> None:
        self.level, self.relay, self.poll, self.status_every = verbosity, relay, poll, status_every
        self.console = console or Console(stderr=True, highlight=False)
        self.live = not relay and self.console.is_terminal and not self.console.is_dumb_terminal
        self.silent = verbosity == QUIET  # no progress bars either (see decode._bar)
        self.held: deque[str] = deque(maxlen=HELD)
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._watcher: _Watcher | None = None
        self.started_at: float | None = None  # time.monotonic() when the search started
        self.ended_at: float | None = None  # ... and when it ended

    @property
    def search_seconds(self) -> float | None:
        """Seconds from the search's start to its end: its trials and the re-runs of the top
        plans, not the preparation before them (weights, data, the probe). None until both."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def __call__(self, msg: str) -> None:
        if self.relay:
            stderr_progress(msg)
        elif self.level == QUIET:
            self.held.append(msg)
        else:
            self.print(msg)

    def detail(self, msg: str) -> None:
        if self.relay:
            stderr_progress(DETAIL_TAG + msg)
        elif self.level == VERBOSE:
            self.print(msg)

    def print(self, msg: str) -> None:
        with self._lock:
            if self._live is None:
                stderr_progress(msg)
                return
            try:  # above the live area
                self.console.print(msg, markup=False, highlight=False, emoji=False, soft_wrap=True)
            except OSError as exc:
                lose_output(exc)

    def watch(
        self, study: Any, cfg: Any, workers: int | None = None, reevaluate: bool = False
    ) -> None:
        """Follow ``study`` (run by ``workers`` processes at once; None: count the running
        trials), and the re-evaluation runs after its budget if ``reevaluate``."""
        if self.relay or self.level == QUIET or self._watcher is not None:
            return
        self._watcher = watcher = _Watcher(self, study, cfg, workers, reevaluate)
        if watcher.n_trials is not None and watcher.counted_at_start >= watcher.n_trials:
            command = "run" if reevaluate else "run `autofreeze search`"
            self.print(spent_note(cfg.study.name, cfg.study.n_trials, command))
        if self.live:
            self._live = Live(
                get_renderable=self._watcher.render,
                console=self.console,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=False,
            )
            self._live.start()
        self._watcher.start()

    def unwatch(self, ended: bool = True) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        watcher.stop(final_poll=ended)
        if self._live is not None:
            with self._lock:
                self._live.stop()
                self._live = None
        if ended:
            watcher.end()

    # -- as the search's observer (autofreeze.search.observer.SearchObserver) -------------
    def started(self, run: Any) -> None:
        self.started_at, self.ended_at = time.monotonic(), None
        self.watch(run.study, run.cfg, workers=run.workers, reevaluate=run.reevaluate)

    def trial_ran(self, run: Any, trial: Any, state: TrialState, values: Any) -> None:
        """Nothing: the display reads finished trials from the study."""

    def trial_told(self, run: Any, trial: FrozenTrial) -> None:
        """Nothing: the display reads finished trials from the study."""

    def ended(self, run: Any) -> None:
        self.ended_at = time.monotonic()
        self.unwatch()

    def __enter__(self) -> Display:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.unwatch(ended=False)
        if exc is not None and self.level == QUIET and not isinstance(exc, KeyboardInterrupt):
            for line in self.held:
                stderr_progress(line)


class _Watcher:
    """The display's view of one study, read from its storage every ``POLL`` seconds."""

    def __init__(
        self, display: Display, study: Any, cfg: Any, workers: int | None, reevaluate: bool
    ) -> None:
        self.d, self.study, self.workers = display, study, workers
        s, self.allowance = cfg.study, allowance(cfg)
        # the search's trials; the re-runs of the top plans follow inside the same budget
        self.n_trials, self.timeout, self.metric = self.allowance.trials, s.timeout, s.metric
        self.epochs = cfg.training.epochs
        self.reevaluations = self.allowance.reruns if reevaluate else 0
        self.t0 = display.started_at or time.monotonic()
        self.trials: list[FrozenTrial] = self._read() or []
        self.seen = {t.number for t in self.trials if t.state in FINISHED}
        self.counted_at_start = records.budget(self.trials)[0]
        self.reruns_at_start = self.reruns_done = len(records.reruns(study))
        self.best: FrozenTrial | None = best_trial(study)
        self.left: tuple[float | None, float] = (None, self.t0)  # the ETA and when it was made
        self.last_status = self.t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autofreeze-display", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, final_poll: bool) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if final_poll:
            self.poll(status=False)

    def _run(self) -> None:
        while not self._stop.wait(self.d.poll):
            self.poll()

    def _read(self) -> list[FrozenTrial] | None:
        try:
            return self.study.get_trials(deepcopy=False)
        except Exception:  # a storage hiccup: the trial loop, not the display, says so
            return None

    # -- what changed ----------------------------------------------------------------------
    def poll(self, status: bool = True) -> None:
        trials = self._read()
        if trials is None:
            return
        new = sorted(
            (t for t in trials if t.state in FINISHED and t.number not in self.seen),
            key=lambda t: t.number,
        )
        self.seen.update(t.number for t in new)
        if any(t.state == TrialState.COMPLETE and records.reevaluation_of(t) is None for t in new):
            best = best_trial(self.study)
            improved = best if best is not None and best.number in {t.number for t in new} else None
            self.best = best
        else:
            improved = None
        now = time.monotonic()
        self.trials = trials
        if self.reevaluations:
            self.reruns_done = len(records.reruns(self.study))
        self.left = (self.eta(trials), now)
        for t in new:
            self._finished(t, improved is not None and t.number == improved.number)
        if improved is not None and not self.d.live:
            self.last_status = now  # a new best's line says how far the search is
        due = now - self.last_status >= self.d.status_every
        if status and due and self.d.level == NORMAL and not self.d.live:
            self.d.print(self.status())
            self.last_status = now

    def _finished(self, t: FrozenTrial, new_best: bool) -> None:
        """A line for a trial that finished: every one on a terminal, else new bests and
        failures; with ``-v`` a full line for every one; none for a trial that did not run."""
        reason = records.fail_reason(t)
        ran = t.state != TrialState.FAIL or reason
        if self.d.level == QUIET or not ran or records.over_budget(t):
            return
        if self.d.level == VERBOSE:
            left = self.eta_words() if self.shows_eta() and self.left[0] is not None else None
            line = trial_line(self.study, t, self.n_trials, self.elapsed(), self.timeout, left)
            self.d.print(line)
            return
        if self.d.live:
            self.d.print(self.trial_line(t, new_best))
        elif new_best:
            self.d.print(f"new best {best_words(t, self.metric)} ({self.progress()})")
        elif reason:
            self.d.print(f"{trial_title(t)} failed ({reason})")

    # -- time left -------------------------------------------------------------------------
    def eta(self, trials: list[FrozenTrial]) -> float | None:
        """Seconds until the search and its re-runs are done, from the trials read now."""
        a = self.allowance
        budget_left = search_left = None
        if a.seconds is not None:
            used = spent(self.study, trials)
            budget_left = a.seconds - used
            # the search's share, as the trial loop reads it (study.allowance.search_spent)
            search_left = (search_share(a, trials) or a.seconds) - used
        return eta(
            trials,
            n_trials=self.n_trials,
            epochs=self.epochs,
            workers=self.workers,
            reruns=self.reruns_left(),
            budget_left=budget_left,
            search_left=search_left,
        )

    def reruns_left(self) -> int:
        return max(0, self.reevaluations - self.reruns_done)

    def shows_eta(self) -> bool:
        """A count or a time budget says where the end is."""
        return bool(self.n_trials) or self.allowance.seconds is not None

    def eta_words(self) -> str:
        """``3m10s``; ``up to 40s`` while re-runs remain (they stop once one plan leads
        clearly); ``measuring`` before a trial that trained a backbone has finished."""
        left, at = self.left
        if left is None:
            return "measuring"
        words = duration(max(0.0, left - (time.monotonic() - at)))
        return f"up to {words}" if self.reruns_left() else words

    def rerunning(self) -> bool:
        """Whether the search's trials are over and the re-runs of the top plans are on."""
        if not self.reevaluations:
            return False
        done, running = records.budget(self.trials)
        if running:
            return False
        if self.reruns_done > self.reruns_at_start:
            return True
        if self.n_trials is not None and done >= self.n_trials:
            return True
        return search_spent(self.allowance, self.study, self.trials)

    # -- the words -------------------------------------------------------------------------
    def trial_line(self, t: FrozenTrial, new_best: bool = False) -> str:
        """``#12 searched complete val_accuracy=0.8133 in 12.3s · k=2 static lr=0.0074 ...``"""
        seconds = duration(records.seconds(t))
        how = t.state.name.lower()
        if t.state == TrialState.PRUNED:
            how += f" at epoch {records.pruned_at_epoch(t) or epochs_run(t)}"
        if t.state == TrialState.FAIL:
            how += f" ({records.fail_reason(t)})"
        else:
            how += f" {_value(t, self.metric)}"
        plan = short_plan(records.plan(t), records.n_blocks(t))
        return (
            f"#{t.number} {records.name(t)} {how}{' in ' + seconds if seconds else ''}"
            f"{' · ' + plan if plan else ''}{' · new best' if new_best else ''}"
        )

    def progress(self) -> str:
        """``12/40 trials done, 2 running, 1m30s elapsed, ETA 3m10s``; during the re-evaluation
        ``34/34 trials done, re-evaluating: 2 of up to 6 re-runs done, ...``"""
        done, running = records.budget(self.trials)
        budget = f"{done}/{self.n_trials}" if self.n_trials else f"{done}"
        if self.rerunning():
            now = f"re-evaluating: {self.reruns_done} of up to {self.reevaluations} re-runs done"
        else:
            now = f"{running} running"
        words = f"{budget} trials done, {now}, {duration(self.elapsed())} elapsed"
        if self.shows_eta():
            words += f", ETA {self.eta_words()}"
        if self.timeout:
            words += f", timeout in {duration(max(0.0, self.timeout - self.elapsed()))}"
        return words

    def status(self) -> str:
        """A periodic line: the budget and the best by its value (its plan was said when it
        became the best)."""
        if self.best is None:
            return self.progress()
        return (
            f"{self.progress()}; best {_value(self.best, self.metric)} (trial {self.best.number})"
        )

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def end(self) -> None:
        """The last line: what the budget holds, how long it took, the best plan."""
        done, _ = records.budget(self.trials)
        reruns = len(records.reruns(self.study))
        if done == self.counted_at_start and reruns == self.reruns_at_start:
            return  # nothing ran (a spent budget): the result says the rest
        states = [t.state for t in self.trials if records.counts(t)]
        counts = ", ".join(
            f"{states.count(s)} {w}"
            for s, w in (
                (TrialState.COMPLETE, "complete"),
                (TrialState.PRUNED, "pruned"),
                (TrialState.FAIL, "failed"),
            )
            if states.count(s)
        )
        budget = f"{done}/{self.n_trials}" if self.n_trials else f"{done}"
        best = best_trial(self.study)
        again = f" and {reruns} re-run{'s' if reruns != 1 else ''}" if reruns else ""
        seconds = self.d.search_seconds
        line = (
            f"{budget} trials{again} done ({counts}); search {duration(seconds or self.elapsed())}"
        )
        if best is not None:
            line += f"; best {best_words(best, self.metric)}"
        self.d.print(line)

    # -- the live area ---------------------------------------------------------------------
    def render(self) -> RenderableType:
        try:
            return self._render()
        except Exception:  # never let a drawing bug stop the search
            return Text(self.progress())

    def _render(self) -> RenderableType:
        done, _ = records.budget(self.trials)
        head = Table.grid(padding=(0, 1))
        total = self.n_trials or max(done, 1)
        head.add_row(
            ProgressBar(total=total, completed=min(done, total), width=24), self.progress()
        )
        rows: list[RenderableType] = [head]
        running = [t for t in self.trials if t.state == TrialState.RUNNING]
        now = dt.datetime.now()
        for t in running[:SHOWN]:
            # epochs from the history (every one); the metric as last reported (validated)
            steps, ran = t.intermediate_values, epochs_run(t)
            at = f"epoch {ran}/{self.epochs} " if ran else "starting "
            last = f"{self.metric}={steps[max(steps)]:.4f} " if steps else ""
            if steps and max(steps) < ran:  # validated epochs only: say which one it is
                last = f"{last.strip()} (epoch {max(steps)}) "
            took = duration((now - t.datetime_start).total_seconds()) if t.datetime_start else ""
            plan = short_plan(records.plan(t), records.n_blocks(t))
            line = f"  #{t.number} {records.name(t)} {at}{last}{took} · {plan}"
            rows.append(Text(line, no_wrap=True, overflow="ellipsis"))
        if len(running) > SHOWN:
            rows.append(Text(f"  … {len(running) - SHOWN} more running"))
        if self.best is not None:
            rows.append(Text(f"best {best_words(self.best, self.metric)}"))
        return Group(*rows)
