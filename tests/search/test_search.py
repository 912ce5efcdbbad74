"""The search end to end on real optuna studies in SQLite, driven through the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from autofreeze.cli import cli
from autofreeze.recipes import BASELINE_NAMES
from autofreeze.study import records
from autofreeze.study.storage import load_existing_study
from tests.commands import invoke
from tests.studies import write_study

BASELINES = set(BASELINE_NAMES)


def load(config, name="tiny"):
    return load_existing_study(f"sqlite:///{config.parent / name}.db", name)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One small study searched through the CLI, shared by the read-back tests."""
    folder = tmp_path_factory.mktemp("study")
    config = write_study(folder, n_trials=8)
    result = invoke("search", str(config), "--json")
    assert result.exit_code == 0, result.output
    return config, json.loads(result.stdout)


def test_search_writes_the_study_and_runs_baselines_first(searched):
    config, out = searched
    assert (config.parent / "tiny.db").is_file()
    study = load(config)
    trials = study.get_trials()
    assert len(trials) == 8
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    names = [t.user_attrs.get("baseline") for t in trials]
    assert set(names[:6]) == BASELINES and names[6:] == [None, None]
    scratch = next(t for t in trials if t.user_attrs.get("baseline") == "from_scratch")
    assert records.plan(scratch)["init"] == "scratch"
    probe = next(t for t in trials if t.user_attrs.get("baseline") == "linear_probe")
    assert probe.user_attrs["frozen_param_fraction"] > 0.9
    assert len(records.frozen_blocks(probe)) == 5
    for key in ("seconds", "train_examples_per_second", "trainable_params", "peak_memory_mb"):
        assert probe.user_attrs[key] > 0
    assert out["best"]["value"] == max(t.value for t in trials if t.value is not None)
    # the config travels with the study so other workers run the same search
    assert records.config(study)["backbone"]["name"] == "resnet10t"


def test_best_and_trials_read_the_study_back(searched):
    config, out = searched
    best = invoke("best", str(config), "--json")
    assert best.exit_code == 0
    assert json.loads(best.stdout)["best"]["number"] == out["best"]["number"]
    rows = json.loads(invoke("trials", str(config), "--json").stdout)
    assert len(rows) == 8 and {r["name"] for r in rows[:6]} == BASELINES
    text = invoke("trials", str(config)).stdout
    assert "linear_probe" in text and "plan" in text and "k=5 static" in text
    assert "boundary" in invoke("trials", str(config), "--wide").stdout
    url = f"sqlite:///{config.parent / 'tiny.db'}"
    by_url = invoke("best", "--storage", url, "--study-name", "tiny", "--json")
    assert json.loads(by_url.stdout)["best"]["number"] == out["best"]["number"]


def test_rerun_resumes_to_a_larger_budget_without_rerunning(searched, tmp_path):
    config, _ = searched
    before = {t.number: (t.state, t.value, t.datetime_complete) for t in load(config).trials}
    again = invoke("search", str(config), "--n-trials", "10", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["ran_this_time"] == 2
    after = load(config).trials
    assert len(after) == 10
    for t in after[:8]:
        assert before[t.number] == (t.state, t.value, t.datetime_complete)
    # the resumed run's sampler has a seed of its own: it does not replay the first run's trials
    searched = [tuple(sorted(t.params.items())) for t in after if "baseline" not in t.user_attrs]
    assert len(searched) == 4 and len(set(searched)) == 4, searched
    # the same budget again runs nothing
    same = invoke("search", str(config), "--n-trials", "10", "--json")
    assert json.loads(same.stdout)["ran_this_time"] == 0
    assert len(load(config).trials) == 10


def test_train_best_checkpoint_keeps_frozen_blocks_and_reproduces_the_metric(searched, tmp_path):
    import torch
    from safetensors.torch import load_file

    from autofreeze.config import load_config
    from autofreeze.runs.model import load_checkpoint
    from autofreeze.runs.prepare import prepare

    config, out = searched
    result = invoke(
        "train",
        str(config),
        "--best",
        "--on",
        "train",  # reproduce the trial (the default with --best is the final model: train+val)
        "--out",
        str(tmp_path / "best.safetensors"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["metrics"]["val_accuracy"] == pytest.approx(out["best"]["value"])
    assert len(info["classes"]) == 3 and info["trained_on"] == "train"

    frozen = invoke(
        "train",
        str(config),
        "--param",
        "boundary=3",
        "--param",
        "head_lr=0.01",
        "--out",
        str(tmp_path / "k3.safetensors"),
        "--json",
    )
    assert frozen.exit_code == 0, frozen.output
    info = json.loads(frozen.stdout)
    source = load_file(str(config.parent / "weights" / "source.safetensors"))
    trained = load_file(info["checkpoint"])
    backbone, sidecar = load_checkpoint(info["checkpoint"])
    assert sidecar["plan"]["boundary"] == 3 and len(sidecar["frozen_blocks"]) == 3
    for block in backbone.blocks[:3]:
        for name in block.param_names:
            assert torch.equal(trained[name], source[name]), name
    moved = [
        n
        for b in backbone.blocks[3:]
        for n in b.param_names
        if not torch.equal(trained[n], source[n])
    ]
    assert moved
    # loading the checkpoint back reproduces the reported validation metric
    cfg = load_config(config)
    val = prepare(cfg).val
    with torch.no_grad():
        acc = (backbone.model(val.batch(slice(None))).argmax(1) == val.y).float().mean().item()
    assert acc == pytest.approx(info["metrics"]["val_accuracy"], abs=1e-6)


def diverging_study(tmp_path, name: str, head_lr: str, **kw):
    """Full fine-tuning, no baselines; ``head_lr = 1e6`` makes the loss NaN within epochs."""
    search = f'boundary = 0\nschedules = ["static"]\nhead_lr = {head_lr}\nbackbone_lr_ratio = 1.0'
    return write_study(tmp_path, name, study_extra="baselines = false", search=search, **kw)


def test_a_diverging_trial_fails_early_and_the_study_goes_on(tmp_path):
    config = diverging_study(tmp_path, "diverge", "[1e-4, 1e6]", n_trials=2, epochs=4)
    from autofreeze.config import load_config
    from autofreeze.study import open_study

    study = open_study(load_config(config))
    study.enqueue_trial({"head_lr": 1e6})
    result = invoke("search", str(config), "--json")
    assert result.exit_code == 0, result.output
    first = load(config, "diverge").trials[0]
    assert first.state == TrialState.FAIL
    assert len(first.intermediate_values) < 4
    assert first.user_attrs["fail_reason"].startswith("diverged")
    assert len(load(config, "diverge").trials) == 2


def test_median_pruner_stops_a_hopeless_trial(tmp_path):
    config = write_study(
        tmp_path,
        "prune",
        n_trials=5,
        epochs=4,
        study_extra='baselines = false\nsampler = "random"',
        # the configured range exactly: 1e-9 is below what the budget could use
        search=(
            'boundary = 5\nschedules = ["static"]\nhead_lr = [1e-9, 3e-2]\nfit_to_budget = false'
        ),
    )
    from autofreeze.config import load_config
    from autofreeze.study import open_study

    study = open_study(load_config(config))
    for _ in range(3):
        study.enqueue_trial({"head_lr": 3e-2})
    study.enqueue_trial({"head_lr": 1e-9})  # learns nothing: chance accuracy from epoch 1
    result = invoke("search", str(config), "--n-trials", "4")
    assert result.exit_code == 0, result.output
    hopeless = load(config, "prune").trials[3]
    assert hopeless.state == TrialState.PRUNED
    assert len(hopeless.intermediate_values) < 4


def test_out_of_memory_fails_the_trial_with_its_reason_and_the_study_goes_on(tmp_path):
    """A plugin schedule that runs out of memory at its second epoch, as a big model would."""
    import torch

    from autofreeze.config import load_config
    from autofreeze.hookspecs import hookimpl
    from autofreeze.plugins.registry import get_registry
    from autofreeze.schedules import Phase, Schedule
    from autofreeze.search.run import run_search
    from autofreeze.study import open_study

    class Greedy(Schedule):
        name = "greedy"
        description = "needs more memory than there is after one epoch"

        def phase(self, epoch: int) -> Phase:
            if epoch == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
            return Phase(self.boundary)

    class Plugin:
        @hookimpl
        def register_schedules(self, register):
            register(Greedy)

    config = write_study(
        tmp_path,
        "oom",
        n_trials=3,
        epochs=2,
        pruner="none",
        study_extra="baselines = false",
        search='schedules = ["greedy", "static"]',
    )
    cfg = load_config(config)
    with get_registry().plugin(Plugin(), name="greedy-plugin"):
        open_study(cfg).enqueue_trial({"schedule": "greedy"})
        run_search(cfg, progress=lambda _: None)
    found = load(config, "oom").trials
    assert len(found) == 3  # the failure counts: its reason is recorded
    first = found[0]
    assert first.state == TrialState.FAIL and first.params["schedule"] == "greedy"
    assert first.user_attrs["fail_reason"] == "out of memory"
    assert len(records.history(first)) == 1  # it stopped at the second epoch
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in found[1:])


def test_train_on_train_and_val_says_so(searched, tmp_path):
    config, _ = searched
    result = invoke(
        "train",
        str(config),
        "--param",
        "boundary=5",
        "--on",
        "train+val",
        "--out",
        str(tmp_path / "final"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["trained_on"] == "train+val"
    assert info["checkpoint"].endswith("final.safetensors")
    assert json.loads((tmp_path / "final.json").read_text())["plan"]["boundary"] == 5


def test_the_search_space_follows_the_run_budget(tmp_path):
    """24 images in batches of 8 for 2 epochs: 6 AdamW steps of resnet10t's 512-input head."""
    from autofreeze.config import load_config
    from autofreeze.runs.prepare import prepare
    from autofreeze.search.run import search_space
    from autofreeze.search.space import head_lr_floor

    cfg = load_config(write_study(tmp_path, weights="none", epochs=2))
    prepared = prepare(cfg)
    assert (prepared.steps_per_run, prepared.head_fan_in) == (6, 512)
    space = search_space(prepared)
    floor = head_lr_floor(6, 512)  # 7.4e-3: the top moves up to keep a decade
    assert space.head_lr.low == pytest.approx(floor)
    assert space.head_lr.high == pytest.approx(10 * floor)
    sgd = cfg.model_copy(update={"training": cfg.training.model_copy(update={"optimizer": "sgd"})})
    prepared.cfg = sgd  # SGD's steps are not normalised: the configured range stands
    assert search_space(prepared).head_lr.low == 1e-4
    exact = cfg.search.model_copy(update={"fit_to_budget": False})
    prepared.cfg = cfg.model_copy(update={"search": exact})
    assert search_space(prepared).head_lr.low == 1e-4 and not search_space(prepared).notes


def test_a_study_name_reused_with_another_config_is_refused_and_the_study_kept(tmp_path):
    """Trials of another dataset or metric would be compared with these as if alike."""
    extra = "baselines = false"
    config = write_study(tmp_path, "reuse", n_trials=2, epochs=1, pruner="none", study_extra=extra)
    assert invoke("search", str(config)).exit_code == 0
    cases = [
        ({"per_class": 9}, "[dataset] train_per_class was 8, now 9"),
        ({"study_extra": f'{extra}\nmetric = "val_loss"'}, "maximizes, [study] metric"),
        ({"epochs": 2}, "[training] epochs was 1, now 2"),
    ]
    for change, shown in cases:
        kw = {"n_trials": 4, "epochs": 1, "pruner": "none", "study_extra": extra, **change}
        write_study(tmp_path, "reuse", **kw)
        result = CliRunner().invoke(cli, ["search", str(config)])
        assert result.exit_code == 1, result.output
        assert "holds 2 trials of another config" in result.output and shown in result.output
        assert "Traceback" not in result.output and "[study] name" in result.output
        study = load(config, "reuse")
        assert len(study.trials) == 2  # nothing ran, nothing enqueued
        assert records.config(study)["dataset"]["train_per_class"] == 8
    write_study(tmp_path, "reuse", n_trials=3, epochs=1, pruner="none", study_extra=extra)
    assert invoke("search", str(config), "--heartbeat", "5").exit_code == 0  # the budget may grow
    assert len(load(config, "reuse").trials) == 3


@pytest.mark.slow  # several seconds: the full suite, not `make check`
def test_a_diverged_trial_is_one_line_on_stderr_without_optunas_traceback(tmp_path):
    import subprocess
    import sys

    config = diverging_study(tmp_path, "loud", "1e6", n_trials=1, epochs=3)
    proc = subprocess.run(
        [sys.executable, "-m", "autofreeze", "search", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trial 0 · searched failed (diverged:" in proc.stderr
    assert "Traceback" not in proc.stderr and "failed with parameters" not in proc.stderr


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # the test's own ask()
def test_a_trial_cut_short_is_retried_before_any_other_queued_trial(tmp_path):
    """A baseline whose worker died (FAIL, no reason, nothing re-queued it) runs again at the
    next search, ahead of the baselines still queued, even with a budget smaller than the
    queue; a retry enqueued behind the queue would never have run."""
    from autofreeze.config import load_config
    from autofreeze.search.run import prepare_search

    config = write_study(tmp_path, "cut", n_trials=4, epochs=1)
    study, _, _ = prepare_search(load_config(config), progress=lambda _: None)
    queued = [t.user_attrs["baseline"] for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(queued) == 3  # what the budget surely runs, one trial left to the sampler
    cut = study.ask()  # claims the first recipe, as a worker does, then the worker dies
    study.tell(cut, state=TrialState.FAIL)
    result = invoke("search", str(config))
    assert result.exit_code == 0, result.output
    assert f"trial {cut.number} was cut short without a result: re-queued" in result.stderr
    trials = load(config, "cut").get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and not [t for t in trials if t.state == TrialState.WAITING]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == cut.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["baseline"] == queued[0]
    assert retry.datetime_start < min(t.datetime_start for t in done if t is not retry)
    # the next run does not re-queue a trial that already has its retry
    again = invoke("search", str(config), "--n-trials", "5")
    assert "cut short" not in again.stderr
    assert sum(t.user_attrs.get("retry_of") == cut.number for t in load(config, "cut").trials) == 1


def test_retries_are_popped_first_from_a_shared_queue(tmp_path):
    """The queue order itself, on the real storage: a retry enqueued last is taken first; two
    studies opened on one storage (two workers) never take the same trial."""
    from autofreeze.config import load_config
    from autofreeze.study import open_study
    from autofreeze.study.queue import StudyOnStorage
    from autofreeze.study.storage import open_storage

    cfg = load_config(write_study(tmp_path, "queue", n_trials=3))
    workers = []
    for _ in range(2):  # each worker opens its own storage, as processes do
        storage = open_storage(cfg.storage_url)
        workers.append(StudyOnStorage(open_study(cfg, storage), storage))
    a, b = workers
    for x in range(3):
        a.study.enqueue_trial({"x": x})
    a.study.enqueue_trial({"x": 0}, user_attrs={"retry_of": 99})
    first, second, third = b.ask(), a.ask(), b.ask()
    assert [first.number, second.number, third.number] == [3, 0, 1]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_of_two_trials_racing_for_the_last_place_only_the_first_runs(tmp_path):
    """Two workers both saw one trial left and both started one: the one that started later
    finds the budget taken, does not run, does not count, and a queued plan goes back."""
    from types import SimpleNamespace

    from autofreeze.config import load_config
    from autofreeze.search.objective import Objective, OverBudget
    from autofreeze.study import open_study, records

    cfg = load_config(write_study(tmp_path, "race", n_trials=2))
    study = open_study(cfg)
    study.tell(study.ask(), 0.5)  # one of the two places is spent
    first = study.ask()
    study.enqueue_trial({"x": 1}, user_attrs={"baseline": "linear_probe"})
    second = study.ask()  # popped from the queue, started after `first`
    objective = Objective(SimpleNamespace(cfg=cfg), space=None)
    objective._check_budget(first)  # nothing ahead of it but the finished trial
    with pytest.raises(OverBudget, match="budget of 2 was taken"):
        objective._check_budget(second)
    trials = study.get_trials()
    assert records.over_budget(trials[second.number])
    back = [t for t in trials if t.state == TrialState.WAITING]
    assert [(t.params or t.system_attrs["fixed_params"], t.user_attrs) for t in back] == [
        ({"x": 1}, {"retry_of": second.number, "baseline": "linear_probe"})
    ]
    assert records.claimed_ahead(trials, first.number) == 1
