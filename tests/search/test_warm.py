"""Warm start (issue 22): a new study runs the best plans of earlier studies first, mapped onto
its backbone and run; earlier studies are read, never written; a study that cannot be read or
optimises another objective is refused before anything is created; ``"auto"`` picks the
studies whose probe curves are nearest. Real searches and real SQLite studies."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autofreeze.config import parse_config
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import get_registry
from autofreeze.review.study_story import trial_kind
from autofreeze.search.space import SearchSpace
from autofreeze.search.warm import (
    distance,
    map_boundary,
    map_plan,
    pick_similar,
    read_warm_start,
    warm_plans,
)
from autofreeze.study import records, store_config
from autofreeze.study.library import read_storage
from autofreeze.study.storage import load_existing_study, open_storage
from tests.commands import invoke
from tests.studies import TinyStudy, write_study


def earlier_study(
    url: str,
    name: str,
    plans: list[tuple[FreezePlan, float]],
    *,
    metric: str = "val_accuracy",
    backbone: str = "resnet10t",
    blocks: int = 5,
    **written: Any,
) -> None:
    """A finished study as its search leaves it, written through the records on the real
    SQLite storage ``url``: its config stored, each trial's plan and blocks, and ``written``:
    its head LR ``floor``, ``probe`` and ``choice`` records."""
    data = tomllib.loads(TinyStudy().toml(name))
    data["study"]["metric"] = metric
    data["backbone"]["name"] = backbone
    cfg = parse_config(data, path=Path(url.removeprefix("sqlite:///")).with_name(f"{name}.toml"))
    storage = open_storage(url)
    made = optuna.create_study(storage=storage, study_name=name, direction=cfg.study.direction)
    study = records.with_storage(made, storage)
    store_config(study, cfg)
    for plan, value in plans:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=value,
                user_attrs={records.PLAN: records.plan_words(plan.to_dict(), blocks)},
                system_attrs={
                    records.SYSTEM + records.PLAN: plan.to_dict(),
                    records.SYSTEM + records.BLOCKS: [f"block{i}" for i in range(blocks)],
                },
            )
        )
    write = {
        "floor": records.write_head_lr_floor,
        "probe": records.write_probe,
        "choice": records.write_choice,
    }
    for key, value in written.items():
        write[key](study, value)
    storage.engine.dispose()


def snapshot(url: str, name: str) -> tuple:
    """Everything a study holds: its attrs, directions and every trial's fields."""
    storage = optuna.storages.RDBStorage(url)
    sid = storage.get_study_id_from_name(name)
    trials = [
        (t.number, t.state, t.values, t.params, t.user_attrs, t.system_attrs, t.datetime_start)
        for t in storage.get_all_trials(sid)
    ]
    held = (
        storage.get_study_user_attrs(sid),
        storage.get_study_system_attrs(sid),
        storage.get_study_directions(sid),
        trials,
    )
    storage.engine.dispose()
    return held


def curve(*accuracies: float, chance: float = 0.25) -> dict:
    """A probe record with this per-block curve."""
    blocks = [{"index": i, "name": f"b{i}", "val_accuracy": a} for i, a in enumerate(accuracies)]
    return {"blocks": blocks, "chance": chance, "boundary": 1, "size": "small"}


# -- the mapping ------------------------------------------------------------------------------
def test_a_boundary_keeps_its_share_of_the_depth():
    assert [map_boundary(k, 4, 5) for k in range(5)] == [0, 1, 3, 4, 5]  # 2.5 rounds up
    assert [map_boundary(k, 10, 4) for k in (0, 3, 5, 9, 10)] == [0, 1, 2, 4, 4]
    assert map_boundary(3, 5, 5) == 3 and map_boundary(3, None, 5) == 3


def test_the_head_lr_keeps_its_multiple_of_the_floor():
    plan = FreezePlan(boundary=2, head_lr=0.006, backbone_lr_ratio=0.2).to_dict()
    mapped = map_plan(plan, 4, 5, from_floor=0.002, to_floor=0.01)
    assert mapped.head_lr == pytest.approx(0.03) and mapped.boundary == 3
    assert mapped.backbone_lr_ratio == 0.2
    assert map_plan(plan, 4, 4, None, 0.01).head_lr == 0.006  # no floor recorded: kept
    assert map_plan(plan, 4, 4, 0.002, None).head_lr == 0.006


def test_the_probe_distance_compares_curves_by_depth_share():
    five = curve(0.3, 0.5, 0.7, 0.9, 1.0)
    assert distance(five, five) == 0
    # the same shape on half the blocks is nearer than another shape on as many
    assert distance(five, curve(0.5, 0.9, 1.0)) < distance(five, curve(1.0, 0.9, 0.7, 0.5, 0.3))
    assert distance(five, {"blocks": []}) == float("inf")


# -- a real warm start --------------------------------------------------------------------------
@pytest.mark.slow  # two tiny searches: about 9 s
def test_a_new_study_runs_the_best_plans_of_earlier_studies_first(tmp_path):
    first = write_study(tmp_path, "first", n_trials=4, epochs=1, weights="none", per_class=12)
    assert invoke("search", str(first)).exit_code == 0
    library = f"sqlite:///{tmp_path / 'library.db'}"
    r18 = FreezePlan(boundary=2, head_lr=0.012, backbone_lr_ratio=0.2)
    earlier_study(library, "r18", [(r18, 0.9)], backbone="resnet18", blocks=4, floor=0.002)
    before = {
        "first": snapshot(f"sqlite:///{tmp_path / 'first.db'}", "first"),
        "r18": snapshot(library, "r18"),
    }
    second = write_study(
        tmp_path,
        "second",
        n_trials=6,
        epochs=1,
        weights="none",
        probe=True,
        search=f'warm_start = ["first.toml", {{ storage = "{library}", study = "r18" }}]',
    )
    result = invoke("search", str(second))
    assert result.exit_code == 0, result.output

    earlier = load_existing_study(f"sqlite:///{tmp_path / 'first.db'}", "first")
    (stored,) = read_storage(f"sqlite:///{tmp_path / 'first.db'}")
    best = stored.best_plans(3)
    assert len(best) == 3 and records.head_lr_floor(earlier) is not None
    lines = result.stderr.splitlines()
    said = [line for line in lines if line.startswith("warm start from ")]
    assert len(said) == 2, result.stderr
    assert said[0].startswith("warm start from 'first' in sqlite:///")
    assert all(f"#{t.number} ({t.value:.4f})" in said[0] for t in best)
    assert "note: warm start from r18 (resnet18, 4 blocks): boundaries mapped by depth share" in (
        result.stderr
    )

    study = load_existing_study(f"sqlite:///{tmp_path / 'second.db'}", "second")
    trials = study.get_trials()
    warm = [t for t in trials if t.user_attrs.get(records.WARM)]
    names = {t.user_attrs[records.WARM] for t in warm}
    assert names == {f"first#{t.number}" for t in best} | {"r18#0"}
    assert [t.number for t in warm] == list(range(len(warm)))  # first, before any other plan
    assert all(t.user_attrs[records.KIND] == "warm" for t in warm)
    assert trial_kind(warm[0]) == f"warm start {warm[0].user_attrs[records.WARM]}"
    # re-run here, never copied: every trial trained in this study, within its budget
    assert len(trials) == 6 and all(records.seconds(t) for t in trials)
    floor = records.head_lr_floor(study)
    (mapped,) = [t for t in warm if t.user_attrs[records.WARM] == "r18#0"]
    assert records.plan(mapped)["boundary"] == 3  # 2 of 4 blocks: half the depth of 5
    assert records.plan(mapped)["head_lr"] == pytest.approx(0.012 / 0.002 * floor)
    for t in warm:
        if t.user_attrs[records.WARM].startswith("first#"):
            number = int(t.user_attrs[records.WARM].split("#")[1])
            was = records.plan(earlier.trials[number])
            assert records.plan(t)["boundary"] == was["boundary"]  # the same backbone
            assert records.plan(t)["schedule"] == was["schedule"]
    rows = invoke("trials", str(second), "--json").stdout
    assert '"name": "r18#0"' in rows
    # reading never wrote: the earlier studies hold exactly what they held
    assert snapshot(f"sqlite:///{tmp_path / 'first.db'}", "first") == before["first"]
    assert snapshot(library, "r18") == before["r18"]


# -- refusals -----------------------------------------------------------------------------------
def refused(tmp_path: Path, entry: str) -> str:
    """The one line a search refuses a warm start with; nothing created."""
    config = write_study(tmp_path, "new", weights="none", search=f"warm_start = [{entry}]")
    result = invoke("search", str(config))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {config}: [search] warm_start: "), line
    assert not list(tmp_path.glob("new.db*"))  # no study, not even an empty file
    return line


def test_refusals_are_one_line_and_leave_everything_as_it_was(tmp_path):
    library = f"sqlite:///{tmp_path / 'library.db'}"
    plan = FreezePlan(boundary=2, head_lr=0.01)
    earlier_study(library, "kept", [(plan, 0.8)])
    earlier_study(library, "lossy", [(plan, 0.4)], metric="val_loss")
    before = snapshot(library, "kept"), snapshot(library, "lossy")

    line = refused(tmp_path, f'{{ storage = "{library}", study = "nope" }}')
    assert f"no study 'nope' in {library} (studies there: kept, lossy)" in line
    line = refused(tmp_path, f'{{ storage = "sqlite:///{tmp_path}/gone/x.db", study = "kept" }}')
    assert f"no SQLite study database at {tmp_path}/gone/x.db" in line
    assert not (tmp_path / "gone").exists()
    line = refused(tmp_path, '{ storage = "postgresql://me:s3cret@127.0.0.1:1/db", study = "a" }')
    assert "postgresql://me:***@127.0.0.1:1/db" in line and "s3cret" not in line
    line = refused(tmp_path, f'{{ storage = "{library}", study = "lossy" }}')
    assert "minimizes val_loss, this study maximizes val_accuracy" in line
    line = refused(tmp_path, '"missing.toml"')
    assert "missing.toml' not found" in line
    assert (snapshot(library, "kept"), snapshot(library, "lossy")) == before


def test_a_bad_entry_is_a_config_error_naming_the_key(tmp_path):
    config = write_study(tmp_path, "new", search='warm_start = ["other"]')
    result = invoke("search", str(config))
    assert result.exit_code == 1 and "search.warm_start: 'other': an entry is" in result.stderr
    assert not list(tmp_path.glob("new.db*"))


def test_the_warm_keys_read_back_from_the_stored_config():
    """Workers run the config the study stored: its warm-start entries parse again."""
    search = 'warm_start = ["auto", { study = "a" }, "o.toml"]\nwarm_from = "sqlite:///b.db"'
    cfg = parse_config(tomllib.loads(TinyStudy(search=search).toml("new")))
    again = parse_config(cfg.to_dict())
    assert again.search == cfg.search and again.search.warm_from == ["sqlite:///b.db"]
    assert cfg.search.warm_plans is None  # the default, as in configs stored before the key


def test_passwords_of_warm_start_storages_stay_out_of_the_study_and_a_new_one_resumes(tmp_path):
    """The stored config is read by anyone who reads the study (optuna-dashboard, `optuna
    studies`); the warm-start keys act only when a study is created, so changing them later
    does not refuse the resume."""
    from autofreeze.study.stored import config_changes

    secret = "postgresql://u:hunter2@db.example/library"
    search = f'warm_start = {{ storage = "{secret}", study = "a" }}\nwarm_from = "{secret}"'
    cfg = parse_config(tomllib.loads(TinyStudy(search=search).toml("new")))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="new")
    store_config(study, cfg)
    stored = records.config(study)
    assert "hunter2" not in str(stored), stored
    assert stored["search"]["warm_start"][0]["storage"].startswith("postgresql://u:***@")
    other = parse_config(tomllib.loads(TinyStudy(search='warm_start = "auto"').toml("new")))
    assert config_changes(stored, other.to_dict()) == []
    wider = parse_config(tomllib.loads(TinyStudy(search="head_lr = [1e-3, 1e-2]").toml("new")))
    assert config_changes(stored, wider.to_dict())  # the search space itself still counts


# -- "auto" -------------------------------------------------------------------------------------
def auto_start(tmp_path: Path, library: str):
    """A new study of ``library`` with ``warm_start = "auto"``: what it read, and its space."""
    data = tomllib.loads(TinyStudy(search='warm_start = "auto"').toml("new"))
    data["study"]["storage"] = library
    cfg = parse_config(data, path=tmp_path / "new.toml")
    space = SearchSpace.from_config(cfg.search, get_registry(), 5, 2)
    return cfg, read_warm_start(cfg, True, lambda _: None), space


def test_auto_picks_the_studies_whose_probe_curves_are_nearest(tmp_path):
    library = f"sqlite:///{tmp_path / 'library.db'}"
    target = curve(0.3, 0.5, 0.7, 0.9, 1.0)
    plan = FreezePlan(boundary=3, head_lr=0.01)
    earlier_study(library, "near", [(plan, 0.8)], probe=curve(0.3, 0.5, 0.7, 0.9, 0.95))
    earlier_study(library, "shallow", [(plan, 0.8)], probe=curve(0.4, 0.8, 1.0), blocks=3)
    earlier_study(library, "far", [(plan, 0.9)], probe=curve(1.0, 0.9, 0.6, 0.4, 0.3))
    earlier_study(library, "lossy", [(plan, 0.1)], probe=target, metric="val_loss")
    earlier_study(library, "new", [(plan, 0.1)], probe=target)  # this study itself
    cfg, start, space = auto_start(tmp_path, library)
    assert {s.name for s in start.candidates} == {"near", "shallow", "far", "lossy"}

    picked = pick_similar(target, list(start.candidates), "val_accuracy", "maximize")
    assert [s.name for s, _ in picked] == ["near", "shallow"]
    said: list[str] = []
    plans = warm_plans(start, cfg, space, None, target, said.append)
    assert said[0].startswith("warm start auto: picked near (distance 0.0")
    assert "shallow (distance" in said[0] and "far" not in said[0]
    assert {name for _, name, _ in plans} == {"near#0", "shallow#0"}
    assert all(attr == records.WARM for attr, _, _ in plans)


def test_each_earlier_studys_best_plan_leads_and_the_probe_orders_the_rest(tmp_path):
    """A small budget keeps the first plans only: the sibling's own choice must be among them,
    even where this task's probe points elsewhere."""
    library = f"sqlite:///{tmp_path / 'library.db'}"
    plans = [
        (FreezePlan(boundary=0, head_lr=0.01), 0.9),  # its best, far from this probe's 3
        (FreezePlan(boundary=2, head_lr=0.01), 0.7),
        (FreezePlan(boundary=3, head_lr=0.01), 0.8),
    ]
    earlier_study(library, "sib", plans)
    earlier_study(library, "other", [(FreezePlan(boundary=4, head_lr=0.01), 0.6)])
    search = 'warm_start = [{ study = "sib" }, { study = "other" }]'
    data = tomllib.loads(TinyStudy(search=search).toml("new"))
    data["study"]["storage"] = library
    cfg = parse_config(data, path=tmp_path / "new.toml")
    space = SearchSpace.from_config(cfg.search, get_registry(), 5, 2)
    start = read_warm_start(cfg, True, lambda _: None)
    probe = {**curve(0.3, 0.5, 0.7, 0.9, 0.95), "boundary": 3}
    got = warm_plans(start, cfg, space, None, probe, lambda _: None)
    assert [name for _, name, _ in got] == ["sib#0", "other#0", "sib#2", "sib#1"]


def test_auto_without_a_comparable_study_starts_cold_and_says_so(tmp_path):
    library = f"sqlite:///{tmp_path / 'library.db'}"
    plan = FreezePlan(boundary=3, head_lr=0.01)
    earlier_study(library, "lossy", [(plan, 0.1)], probe=curve(1, 1), metric="val_loss")
    earlier_study(library, "unprobed", [(plan, 0.8)])
    cfg, start, space = auto_start(tmp_path, library)
    said: list[str] = []
    assert warm_plans(start, cfg, space, None, curve(0.5, 1.0), said.append) == []
    assert said == [
        f"warm start auto: no earlier study of val_accuracy (maximize) with a probe record and "
        f"a finished plan in {library}; starting without one"
    ]
