"""Where a study's record lives (issue 21, point 10): what a person reads in Optuna's own tools
(``optuna studies``, ``optuna trials``, ``trials_dataframe()``, optuna-dashboard's tables) is
short user attributes; the machine record (the stored config, the probe, the choice and its
re-runs, per-epoch histories, phase changes) is Optuna system attributes. Checked on a real
study made by a real search, and against the same study written the previous way (everything
in user attributes), which every reader must still read."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autofreeze.config import load_config
from autofreeze.progress import quiet
from autofreeze.search.run import run_search
from autofreeze.study import best_trial, records
from autofreeze.study.storage import load_existing_study
from tests.commands import invoke
from tests.studies import write_study

ROOT = Path(__file__).resolve().parents[2]
STUDY_ATTR = 200  # the longest study user attr `optuna studies` prints
TRIAL_ATTRS = 400  # a trial's user attrs, all of them, as JSON bytes
# a trial's user attrs: what optuna-dashboard's trial table and trials_dataframe() show
SHOWN = {
    records.PLAN,
    records.KIND,
    records.BASELINE,
    records.PRIOR,
    records.WARM,
    records.PORTFOLIO,
    records.RETRY_OF,
    records.SEED,
    records.FAIL_REASON,
    records.OVER_BUDGET,
    records.FROZEN_PARAM_FRACTION,
    records.FEATURE_CACHE,
    records.PRUNED_AT_EPOCH,
    records.VALIDATION_SECONDS,
    *records.COST,
    "total_params",
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny real search with the probe and re-runs of its top plans (6 trials, 2 re-runs)."""
    folder = tmp_path_factory.mktemp("layout")
    config = write_study(folder, "layout", n_trials=8, epochs=1, probe=True, reevaluate=2)
    run_search(load_config(config), progress=quiet)
    url = f"sqlite:///{folder / 'layout.db'}"
    return config, url, load_existing_study(url, "layout")


@pytest.mark.slow  # the search of `made`: about 14 s on two shared cores
def test_optuna_studies_shows_a_line_per_study_attr(made):
    _, url, study = made
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run(
        [str(optuna_cli), "studies", "--storage", url, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    (row,) = [r for r in json.loads(out) if r["name"] == "layout"]
    shown = row["user_attrs"]
    assert set(shown) == {records.TASK, records.PROBE_WORDS, records.CHOSEN}
    for key, value in shown.items():
        assert isinstance(value, str) and len(value) <= STUDY_ATTR and "\n" not in value, key
    assert shown[records.TASK] == "resnet10t on synthetic, val_accuracy"
    probe = records.probe(study)
    assert shown[records.PROBE_WORDS].startswith(f"boundary {probe['boundary']}: ")
    choice = records.choice(study)
    assert shown[records.CHOSEN].startswith(f"trial {choice['trial']}: {choice['mean']:.4f}")
    assert len(json.dumps(shown)) < 400  # the cell was ~3,900 characters of JSON


@pytest.mark.slow  # the search of `made`: about 14 s on two shared cores
def test_each_trial_carries_a_few_short_user_attrs_and_its_machine_record(made):
    _, _, study = made
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    for t in trials:
        attrs = t.user_attrs
        assert len(json.dumps(attrs)) <= TRIAL_ATTRS, (t.number, attrs)
        assert set(attrs) <= SHOWN, set(attrs) - SHOWN
        assert all(not isinstance(v, dict | list) for v in attrs.values()), attrs
        # the machine record, read back from the system attrs
        assert records.plan(t)["boundary"] == t.params["boundary"]
        assert attrs[records.PLAN] == records.plan_words(records.plan(t), records.n_blocks(t))
        assert records.n_blocks(t) == 5 and len(records.history(t)) >= 1
        assert records.augment(t)["policy"] == "none"
        assert attrs[records.KIND] == records.kind(t)
    assert [records.kind(t) for t in trials].count("searched") >= 1
    assert records.config(study)["backbone"]["name"] == "resnet10t"
    assert len(records.reruns(study)) == 2 and records.probe(study)["blocks"]


@pytest.mark.slow  # the search of `made`: about 14 s on two shared cores
def test_trials_dataframe_works_and_its_user_attr_columns_are_readable(made):
    _, _, study = made
    frame = study.trials_dataframe()  # pandas comes with autofreeze
    assert len(frame) == len(study.trials)
    shown = [c for c in frame.columns if c.startswith("user_attrs_")]
    assert {c.removeprefix("user_attrs_") for c in shown} <= SHOWN
    for column in shown:  # one scalar per cell: a word, a number, a flag (or empty)
        for value in frame[column]:
            assert isinstance(value, str | int | float | bool), (column, value)
    plans = frame["user_attrs_plan"].tolist()
    assert all(isinstance(p, str) and "blocks frozen" in p for p in plans)
    assert frame["params_boundary"].tolist() == [t.params["boundary"] for t in study.trials]
    assert not study.trials_dataframe(multi_index=True).empty


def test_pandas_is_installed_with_autofreeze():
    """``trials_dataframe()`` needs pandas: the README's set-up (``pip install -e '.[dev]'``)
    installs it because autofreeze depends on it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.split(">")[0].split("=")[0].strip() == "pandas" for d in project["dependencies"])
    pinned = (ROOT / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("pandas==") for line in pinned)


TRIAL_RECORD = {  # the machine record's names, and their readers
    records.PLAN: records.plan,
    records.BLOCKS: records.blocks,
    records.FROZEN_BLOCKS: records.frozen_blocks,
    records.HISTORY: records.history,
    records.PHASE_EVENTS: records.phase_events,
    records.CACHE: records.cache,
    records.AUGMENT: records.augment,
}
STUDY_RECORD = {
    records.CONFIG: records.config,
    records.CONFIG_DIR: records.config_dir,
    records.PROBE: records.probe,
    records.CHOICE: records.choice,
    records.RERUNS: records.reruns,
}


def _old_layout(study: optuna.Study, url: str) -> None:
    """``study`` copied as the previous version wrote it: the machine record in user attrs of
    the same names (the plan as data, no plan in words or kind), nothing in system attrs."""
    old = optuna.create_study(study_name="old", storage=url, directions=study.directions)
    for t in study.get_trials():
        attrs = {k: v for k, v in t.user_attrs.items() if k not in (records.PLAN, records.KIND)}
        attrs |= {k: v for k, read in TRIAL_RECORD.items() if (v := read(t)) is not None}
        old.add_trial(
            create_trial(
                state=t.state,
                values=t.values,
                params=t.params,
                distributions=t.distributions,
                user_attrs=attrs,
                system_attrs={
                    k: v for k, v in t.system_attrs.items() if not k.startswith(records.SYSTEM)
                },
                intermediate_values=t.intermediate_values,
            )
        )
    for name, read in STUDY_RECORD.items():
        old.set_user_attr(name, read(study))


@pytest.mark.slow  # the search of `made`: about 14 s on two shared cores
def test_a_study_written_the_previous_way_reads_the_same(made, tmp_path):
    _, url, study = made
    old_url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_layout(study, old_url)
    old = load_existing_study(old_url, "old")
    assert isinstance(old, records.RecordedStudy)
    for new_t, old_t in zip(study.get_trials(), old.get_trials(), strict=True):
        assert not any(k.startswith(records.SYSTEM) for k in old_t.system_attrs)
        for name, read in TRIAL_RECORD.items():
            assert read(old_t) == read(new_t), name
    for name, read in STUDY_RECORD.items():
        assert read(old) == read(study), name
    assert best_trial(old).number == best_trial(study).number

    def shown(*args: str) -> dict:  # what the commands print, read from either study
        out = {}
        for name, at in (("layout", url), ("old", old_url)):
            result = invoke(*args, "--storage", at, "--study-name", name, "--json")
            assert result.exit_code == 0, result.output
            out[name] = json.loads(result.stdout)
        return out

    best = shown("best")
    assert best["layout"]["best"]["reevaluation"] == records.choice(study)
    assert best["old"]["best"] == best["layout"]["best"]  # plan, blocks, cost, re-evaluation
    rows = shown("trials")

    def comparable(row: dict) -> dict:
        return {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}

    assert [comparable(r) for r in rows["old"]] == [comparable(r) for r in rows["layout"]]
    report = tmp_path / "old.html"
    result = invoke("report", "--storage", old_url, "--study-name", "old", "--out", str(report))
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert "Freeze map" in page and f"mean {records.choice(study)['mean']:.4f}" in page


@pytest.mark.slow  # the search of `made`: about 14 s on two shared cores
def test_a_plain_optuna_study_of_the_new_layout_says_how_to_open_it(made):
    _, url, _ = made
    plain = optuna.load_study(study_name="layout", storage=url)
    with pytest.raises(TypeError, match="load_existing_study"):
        records.choice(plain)
    for t in plain.get_trials():  # a trial carries its record: any study reads it
        assert records.history(t) and records.plan(t)


def test_a_running_trial_writes_its_record_where_a_reader_finds_it(tmp_path):
    """The objective's writers on a live ``optuna.Trial`` (system attrs through the trial's
    storage) and on a ``FixedTrial`` (a re-run: nothing stored, user attrs)."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = optuna.create_study(study_name="live", storage=url)
    trial = study.ask()
    records.write_cache(trial, "pooled", 5, "")
    records.write_failure(trial, "diverged: " + "loss is nan " * 30)
    assert records.cache(trial) == {"kind": "pooled", "boundary": 5, "source": "memory"}
    study.tell(trial, state=TrialState.FAIL)
    (told,) = study.get_trials()
    assert told.system_attrs[records.SYSTEM + records.CACHE]["kind"] == "pooled"
    assert records.cache(told)["boundary"] == 5
    assert len(told.user_attrs[records.FAIL_REASON]) == records.SHORT  # a line: cut
    assert records.fail_reason(told) == "diverged: " + "loss is nan " * 30  # the record: whole
    assert records.counts(told)
    fixed = optuna.trial.FixedTrial({"x": 1})
    records.write_cache(fixed, "prefix", 2, "disk")
    assert records.cache(fixed)["source"] == "disk"
