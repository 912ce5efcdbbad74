"""What a trial costs the storage: the worker loop's calls per trial, counted on a real study
(SQLite, and the same study behind a real `autofreeze proxy`), with the load harness's own
counter and sleeping objective (benchmarks/load_harness.py), so that what the harness
measures at 128 workers is pinned here at one.

Before the cut (issue 23) a trial cost 41 calls on SQLite and 43 through the proxy, 5.5 and 6.5
of them reads of every trial of the study; the bounds below fail if one of those comes back.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from autofreeze.plan import FreezePlan
from autofreeze.runs.prepare import prepare
from autofreeze.search import objective as objective_module
from autofreeze.search.observer import Observers, Run
from autofreeze.search.run import search_space
from autofreeze.search.trials import run_trials
from autofreeze.study import open_study, records, stored_config
from autofreeze.study.queue import StudyOnStorage
from autofreeze.study.storage import load_existing_study, open_storage, set_heartbeat
from benchmarks.load_harness import EPOCHS, SleepObjective, timed
from benchmarks.load_harness import prepare as prepare_study
from tests.processes import start_proxy, stop_proxy

N_TRIALS = 6
SECONDS = 0.5  # a trial's sleep: EPOCHS epochs of 0.1 s


def _worker(url: str) -> tuple[Run, SleepObjective, dict[str, list[float]], list[str]]:
    """One worker as the harness starts it (and `autofreeze worker`): its storage timed by
    method, and the keys of every system attr it writes."""
    cfg = stored_config(load_existing_study(url, "calls", storage=open_storage(url)), url)
    prepared = prepare(cfg)
    calls: dict[str, list[float]] = defaultdict(list)
    storage = open_storage(url)
    keys: list[str] = []
    write = storage.set_trial_system_attr

    def set_trial_system_attr(trial_id, key, value):
        keys.append(key)
        return write(trial_id, key, value)

    storage.set_trial_system_attr = set_trial_system_attr
    storage = timed(storage, calls)
    set_heartbeat(storage, cfg.study.heartbeat)
    run = Run(StudyOnStorage(open_study(cfg, storage), storage), cfg)
    backbone = prepared.backbone(FreezePlan(boundary=0))
    for times in calls.values():  # opening the study is once per worker, not per trial
        times.clear()
    return run, SleepObjective(prepared, search_space(prepared), SECONDS, backbone), calls, keys


@pytest.fixture(params=["sqlite", pytest.param("proxy", marks=pytest.mark.slow)])
def study_url(request, tmp_path):
    db = f"sqlite:///{tmp_path}/calls.db"
    prepare_study(tmp_path, "calls", db, N_TRIALS, heartbeat=20)
    if request.param == "sqlite":
        yield db
        return
    proc, url = start_proxy(db, tmp_path / "proxy.log")
    try:
        yield url
    finally:
        stop_proxy(proc, tmp_path / "proxy.log")


def test_a_trial_costs_about_thirty_storage_calls_and_two_reads_of_the_study(study_url):
    run, objective, calls, keys = _worker(study_url)
    ran = run_trials(run, objective, Observers(), lambda _: None, "w0", poll=0.2)
    assert ran == N_TRIALS
    per = {method: len(times) / ran for method, times in calls.items() if times}
    # the loop's one read a step (shared by the budget, the stale trials and the queue) and
    # the budget check's as the trial starts (shared with the choice of its space); the run's
    # start reads twice more, its last step once
    assert per["get_all_trials"] <= 2 + 3 / ran, per
    # the plan (3), the history at the first epoch and at the end; no empty phase events
    written = Counter(keys)
    assert written[records.SYSTEM + records.HISTORY] == 2 * ran, written
    assert records.SYSTEM + records.PHASE_EVENTS not in written
    # through a proxy a heartbeat is a system attr too: one a trial (an interval of 20 s)
    assert written.pop(records.SYSTEM + records.HEARTBEAT, 0) <= ran, written
    assert sum(written.values()) == 5 * ran, written
    # trial ids are known from the queue: no lookup by name or number for a sampled trial
    assert per.get("get_study_id_from_name", 0) <= 1 / ran, per
    assert sum(per.values()) <= 31, sorted(per.items())

    # what outside readers see is whole: every epoch's history, every report, the plan
    study = load_existing_study(study_url, "calls", storage=run.on.storage)
    done = [t for t in study.get_trials() if records.counts(t)]
    assert len(done) == N_TRIALS
    for t in done:
        assert [h["epoch"] for h in records.history(t)] == list(range(1, EPOCHS + 1))
        assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1))
        assert records.plan(t)["boundary"] == t.params["boundary"]
        assert records.phase_events(t) == []


def test_epochs_longer_than_history_every_are_each_written(tmp_path, monkeypatch):
    """The history of a running trial is written at every epoch that ends HISTORY_EVERY
    seconds after the last write: with epochs longer than that (a GPU's), every epoch."""
    db = f"sqlite:///{tmp_path}/calls.db"
    prepare_study(tmp_path, "calls", db, 2, heartbeat=20)
    monkeypatch.setattr(objective_module, "HISTORY_EVERY", 0.05)  # epochs of 0.1 s
    run, objective, _, keys = _worker(db)
    assert run_trials(run, objective, Observers(), lambda _: None, "w0", poll=0.2) == 2
    # every epoch, and the end's write of the same history is skipped (nothing changed)
    assert Counter(keys)[records.SYSTEM + records.HISTORY] == 2 * EPOCHS, Counter(keys)
