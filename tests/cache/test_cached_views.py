"""Cached augmented views: with ``augment`` and ``cached_views = N``, frozen work is cached for
N fixed views of each training image, and the trial trains as it would on those views."""

from __future__ import annotations

import optuna
import pytest
import torch
from click.testing import CliRunner

from autofreeze.cache.activations import PrefixCache, Views, prefix_features
from autofreeze.cli import cli
from autofreeze.core.train import TrainConfig, Trainer
from autofreeze.data.augment import augment_batch, pick_views
from autofreeze.plan import FreezePlan
from autofreeze.schedules import Static
from autofreeze.study import records
from autofreeze.testing import tiny_split
from tests.models import make
from tests.studies import write_study


def stack(batch):  # what Views.apply holds of each batch: the images themselves
    return batch


def test_views_are_fixed_by_their_seed_and_each_is_the_image_or_its_flip():
    split = tiny_split(12, size=16)
    stacked = Views(3, seed=5).apply(stack, split)
    assert stacked.views == 3 and len(stacked) == 12 and stacked.x.shape[0] == 36
    assert torch.equal(stacked.x, Views(3, seed=5).apply(stack, split).x)  # reproducible
    assert not torch.equal(stacked.x, Views(3, seed=6).apply(stack, split).x)
    flipped = []
    for v in range(3):
        view = stacked.x[v * 12 : (v + 1) * 12]
        same = (view == split.x).flatten(1).all(1)
        mirrored = (view == split.x.flip(-1)).flatten(1).all(1)
        assert bool((same | mirrored).all()), v  # nothing but the policy's flip
        flipped.append(mirrored & ~same)
    assert 0 < int(torch.stack(flipped).sum()) < 36  # some views flipped, not all
    assert not torch.equal(flipped[0], flipped[1])  # views differ from each other
    assert torch.equal(split.x, tiny_split(12, size=16).x)  # the images are left as they were


def test_each_epoch_draws_one_view_per_image():
    idx = torch.tensor([3, 0, 7])
    rows = pick_views(idx, n_images=10, views=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rows % 10, idx) and bool(((rows // 10) < 4).all())
    assert torch.equal(pick_views(idx, 10, 1, torch.Generator()), idx)


def test_online_augmentation_flips_a_random_half_in_place():
    x = torch.arange(2 * 4 * 3 * 2 * 2, dtype=torch.float32).reshape(8, 3, 2, 2)
    out = augment_batch(x.clone(), torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 8
    assert torch.equal(out[changed], x[changed].flip(-1))


def test_training_on_cached_views_equals_training_on_the_augmented_images():
    """The trainer on N views of the images (no online augmentation) and on the cached prefix
    outputs of the same views draw the same view per image and agree to 1e-4 each epoch."""
    train, val = tiny_split(16, size=32), tiny_split(8, size=32, seed=1)
    views = Views(2, seed=3)
    runs = []
    for cached in (False, True):
        backbone = make("resnet10t")
        plan = FreezePlan(boundary=2, head_lr=0.01, backbone_lr_ratio=0.5)
        schedule = Static(boundary=2, n_blocks=backbone.n_blocks, epochs=2)
        cfg = TrainConfig(epochs=2, batch_size=8, augment=cached, cached_views=2 if cached else 0)
        trainer = Trainer(backbone, plan, schedule, cfg)
        if cached:
            got = prefix_features(
                backbone,
                plan,
                train,
                val,
                PrefixCache(),
                weights="none",
                seed=0,
                device="cpu",
                views=views,
            )
            assert got.train.views == 2 and got.train.x.shape[0] == 32
            trainer.use_prefix(got.split)
            assert not trainer.augment_online
            runs.append(trainer.fit(got.train, got.val))
        else:
            runs.append(trainer.fit(views.apply(stack, train), val))
    for a, b in zip(*(r.history for r in runs), strict=True):
        assert abs(a.train_loss - b.train_loss) < 1e-4 and abs(a.val_loss - b.val_loss) < 1e-4
        assert a.val_accuracy == b.val_accuracy


def _study(tmp_path, name, training, n_trials=2):
    config = write_study(
        tmp_path,
        name,
        n_trials=n_trials,
        epochs=2,
        pruner="none",
        study_extra="baselines = false",
        search='boundary = 2\nschedules = "static"\ninit = "pretrained"',
    )
    config.write_text(config.read_text().replace("[training]\n", f"[training]\n{training}\n"))
    return config


def _trials(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/{name}.db").trials


@pytest.mark.slow  # several seconds: the full suite, not `make check`
def test_augmentation_turns_the_cache_off_unless_views_are_asked_for(tmp_path):
    for name, training, expected in [
        ("online", 'augment = "flip"', None),
        ("views", "augment = true\ncached_views = 2", ["computed", "disk"]),
    ]:
        config = _study(tmp_path, name, training, n_trials=1 if expected is None else 2)
        result = CliRunner().invoke(cli, ["search", str(config)])
        assert result.exit_code == 0, result.output
        trials = _trials(tmp_path, name)
        if expected is None:
            assert [t.user_attrs[records.FEATURE_CACHE] for t in trials] == [False]
            assert all(records.cache(t) is None for t in trials)
        else:
            assert [records.cache(t) for t in trials] == [
                {"kind": "prefix", "boundary": 2, "source": s, "views": 2} for s in expected
            ]
    # the views entry is keyed apart from the unaugmented one (which a plain study would use)
    plain = CliRunner().invoke(cli, ["search", str(_study(tmp_path, "plain", "", n_trials=1))])
    assert plain.exit_code == 0, plain.output
    assert len(list((tmp_path / ".autofreeze-cache").glob("*.pt"))) == 2


def test_a_boundary_that_cannot_be_cached_is_said_once_per_study_and_recorded(tmp_path):
    """timm's test_vit cannot be traced: every trial records why it ran uncached, and the
    note is said by the first run of the study only (a resumed run, another Objective, keeps
    quiet)."""
    config = _study(tmp_path, "vit", "", n_trials=1)
    text = config.read_text().replace('name = "resnet10t"', 'name = "test_vit"', 1)
    text = text.replace('init = "pretrained"', 'init = "scratch"')
    config.write_text(text.replace('weights = "weights/source.safetensors"', 'weights = "none"'))
    outputs = []
    for n in (1, 2):
        result = CliRunner().invoke(cli, ["search", str(config), "--n-trials", str(n)])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert [out.count("runs uncached at block 2") for out in outputs] == [1, 0], outputs
    trials = _trials(tmp_path, "vit")
    assert len(trials) == 2
    for t in trials:
        entry = records.cache(t)
        assert entry["kind"] == "none" and entry["boundary"] == 2 and entry["reason"]
        assert t.user_attrs[records.FEATURE_CACHE] is False
