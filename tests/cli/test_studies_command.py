"""``autofreeze studies``: what a storage holds, one row per study (issue 22), on real SQLite
studies written through the records."""

from __future__ import annotations

import json

import optuna

from autofreeze.plan import FreezePlan
from tests.commands import invoke
from tests.search.test_warm import earlier_study, snapshot
from tests.studies import write_study


def two_studies(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'library.db'}"
    lp = FreezePlan(boundary=5, head_lr=0.01)
    ft = FreezePlan(boundary=1, schedule="gradual", schedule_params={"every": 1}, head_lr=0.003)
    # "digits": its re-evaluation chose trial 1, whose mean over 3 runs is below trial 0's run
    choice = {"trial": 1, "mean": 0.91, "ci95": 0.02, "values": [0.9, 0.91, 0.92]}
    earlier_study(url, "digits", [(lp, 0.95), (ft, 0.93)], choice=choice)
    head = FreezePlan(boundary=4, head_lr=0.01)
    earlier_study(url, "r18", [(ft, 0.4), (head, 0.3)], metric="val_loss", blocks=4)
    return url


def test_studies_lists_each_study_of_a_storage(tmp_path, monkeypatch):
    url = two_studies(tmp_path)
    before = snapshot(url, "digits"), snapshot(url, "r18")
    result = invoke("studies", url, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["study"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"digits", "r18"}
    digits, r18 = rows["digits"], rows["r18"]
    assert digits["dataset"]["name"] == "synthetic" and digits["backbone"] == "resnet10t"
    assert digits["task"].startswith("synthetic(num_classes=3, ")
    assert (digits["metric"], digits["direction"], digits["trials"]) == (
        "val_accuracy",
        "maximize",
        2,
    )
    # the re-evaluated choice, its mean over its runs, not the best single run
    assert (digits["best_trial"], digits["value"], digits["runs"]) == (1, 0.91, 3)
    assert digits["plan"].startswith("1/5 blocks frozen, gradual(every=1), head lr 0.003")
    assert (r18["direction"], r18["best_trial"], r18["value"], r18["blocks"]) == (
        "minimize",
        1,  # the lower loss
        0.3,
        4,
    )
    assert r18["plan"].startswith("4/4 blocks frozen")

    table = invoke("studies", url).stdout.splitlines()
    assert table[0].split() == ["study", "task", "backbone", "metric", "trials", "value", "plan"]
    assert all(len(line) <= 100 for line in table)
    assert table[2].startswith("digits ") and "val_accuracy ↑" in table[2]
    assert "0.9100" in table[2] and "k=1 gradual(1)" in table[2]
    assert "val_loss ↓" in table[3] and "0.3000" in table[3]
    wide = invoke("studies", url, "--wide").stdout
    assert "1/5 blocks frozen, gradual(every=1)" in wide and "maximize" in wide

    # the storage from the environment, or from a config
    monkeypatch.setenv("AUTOFREEZE_STORAGE", url)
    assert json.loads(invoke("studies", "--json").stdout) == list(rows.values())
    monkeypatch.delenv("AUTOFREEZE_STORAGE")
    config = write_study(tmp_path, "other")
    config.write_text(config.read_text().replace("seed = 0", f'seed = 0\nstorage = "{url}"', 1))
    assert json.loads(invoke("studies", "--config", str(config), "--json").stdout) == list(
        rows.values()
    )
    assert (snapshot(url, "digits"), snapshot(url, "r18")) == before  # read, never written


def test_studies_says_what_is_wrong_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOFREEZE_STORAGE", raising=False)
    missing = invoke("studies", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 1
    assert missing.stderr.strip().splitlines() == [
        f"Error: no SQLite study database at {tmp_path / 'none.db'} (check the path; "
        "`autofreeze search CONFIG` creates it)"
    ]
    assert not (tmp_path / "none.db").exists()
    nowhere = invoke("studies")
    assert nowhere.exit_code == 2 and "give a STORAGE URL, --config CONFIG" in nowhere.stderr
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(empty).engine.dispose()  # a storage with no study
    result = invoke("studies", empty)
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.strip() == f"no studies in {empty}"
