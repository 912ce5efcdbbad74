"""Augmentation policies: per-image random draws from the trial's generator (the same run
under the same seed), never at validation, searchable, and recorded with how they apply."""

from __future__ import annotations

import optuna
import pytest
import torch
from click.testing import CliRunner

from autofreeze.cli import cli
from autofreeze.core.train import TrainConfig, Trainer
from autofreeze.data.augment import POLICIES, augment_batch, mix, view_batches
from autofreeze.data.tensors import TensorSplit
from autofreeze.plan import FreezePlan
from autofreeze.schedules import Static
from autofreeze.study import records
from tests.models import make
from tests.studies import write_study


def images(n=8, size=24, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_is_a_fixed_function_of_the_seed(policy):
    x = images()
    a = augment_batch(x.clone(), torch.Generator().manual_seed(1), policy)
    b = augment_batch(x.clone(), torch.Generator().manual_seed(1), policy)
    c = augment_batch(x.clone(), torch.Generator().manual_seed(2), policy)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    if policy == "none":
        assert torch.equal(a, x)
    else:
        assert not torch.equal(a, c)  # another seed, other draws
        changed = (a != x).flatten(1).any(1)
        assert int(changed.sum()) >= 2  # per image: not one draw for the whole batch
        if policy != "flip":
            # each image its own crop: no two changed images moved the same way
            assert len({tuple(a[i].flatten()[:64].tolist()) for i in range(len(a))}) == len(a)


@pytest.mark.parametrize("policy", ["flip", "crop", "trivial"])
def test_a_view_is_the_same_however_its_images_are_batched(policy):
    x = images(10)
    split = TensorSplit(x, torch.zeros(10, dtype=torch.long), mean=(0.5,) * 3, std=(0.25,) * 3)
    whole = torch.cat(list(view_batches(split, 10, view=1, seed=3, policy=policy)))
    pieces = torch.cat(list(view_batches(split, 3, view=1, seed=3, policy=policy)))
    other = torch.cat(list(view_batches(split, 10, view=2, seed=3, policy=policy)))
    assert torch.equal(whole, pieces) and not torch.equal(whole, other)
    assert torch.equal(split.x, x)  # the split's own images are left as they were


def trainer(policy: str, **cfg) -> Trainer:
    torch.manual_seed(0)
    backbone = make("resnet10t")
    plan = FreezePlan(boundary=3, head_lr=0.01, backbone_lr_ratio=0.5, augment=policy)
    schedule = Static(boundary=3, n_blocks=backbone.n_blocks, epochs=2)
    return Trainer(backbone, plan, schedule, TrainConfig(epochs=2, batch_size=4, **cfg))


def data(n=12, seed=0) -> TensorSplit:
    return TensorSplit(images(n, seed=seed), torch.arange(n) % 3, mean=(0.5,) * 3, std=(0.25,) * 3)


def test_training_is_the_same_under_a_seed_and_validation_is_never_augmented():
    train, val = data(), data(6, seed=1)
    runs = {p: trainer(p, seed=5).fit(train, val).history for p in ("trivial", "none")}
    again = trainer("trivial", seed=5).fit(train, val).history
    assert [e.train_loss for e in runs["trivial"]] == [e.train_loss for e in again]
    assert runs["trivial"][0].train_loss != runs["none"][0].train_loss
    fresh = {p: trainer(p) for p in ("none", "crop")}
    for t in fresh.values():
        t.enter_phase(0)
    assert fresh["none"].evaluate(val) == fresh["crop"].evaluate(val)  # same weights, no policy


def test_mixup_and_cutmix_give_soft_labels_and_train():
    x = torch.randn(6, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, soft = mix(x, y, 3, torch.Generator().manual_seed(0), mixup=0.4, cutmix=1.0)
    assert soft.shape == (6, 3) and torch.allclose(soft.sum(1), torch.ones(6))
    assert not torch.equal(mixed, x)
    history = trainer("flip", mixup=0.4, cutmix=1.0).fit(data(), data(6, seed=1)).history
    assert all(torch.isfinite(torch.tensor(e.train_loss)) for e in history)


def test_augment_is_a_search_dimension_recorded_with_how_it_applies(tmp_path):
    config = write_study(
        tmp_path,
        "aug",
        n_trials=4,
        epochs=1,
        pruner="none",
        study_extra="baselines = false",
        search='boundary = 2\nschedules = "static"\ninit = "pretrained"\n'
        'augment = ["none", "crop", "trivial"]',
    )
    config.write_text(config.read_text().replace("[training]\n", "[training]\ncached_views = 2\n"))
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="aug", storage=f"sqlite:///{tmp_path}/aug.db")
    seen = set()
    for t in study.trials:
        policy = t.params.get("augment")
        seen.add(policy)
        applied = records.augment(t)
        assert applied["policy"] == policy == records.plan(t)["augment"]
        if policy == "none":
            assert applied["applied"] == "none"
            assert "views" not in records.cache(t)
        else:  # cached views of the policy: the prefix is served from the cache
            expected = {"policy": policy, "applied": "cached views", "mix": False, "views": 2}
            assert applied == expected
            assert records.cache(t)["views"] == 2
    assert len(seen) >= 2, seen


def test_mixing_turns_the_caches_off(tmp_path):
    config = write_study(
        tmp_path,
        "mix",
        n_trials=1,
        epochs=1,
        pruner="none",
        study_extra="baselines = false",
        search='boundary = 2\nschedules = "static"\ninit = "pretrained"',
    )
    extra = '[training]\naugment = "crop"\ncached_views = 2\nmixup = 0.2\n'
    config.write_text(config.read_text().replace("[training]\n", extra))
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert result.exit_code == 0, result.output
    (trial,) = optuna.load_study(study_name="mix", storage=f"sqlite:///{tmp_path}/mix.db").trials
    assert records.augment(trial) == {"policy": "crop", "applied": "online", "mix": True}
    assert trial.user_attrs[records.FEATURE_CACHE] is False
