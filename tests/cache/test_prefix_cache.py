"""The frozen-prefix cache at any boundary: split forward, equal training, keys, storage."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from autofreeze.cache.activations import (
    PrefixCache,
    content_key,
    prefix_cacheable,
    prefix_features,
)
from autofreeze.core.backbones import state_checksum
from autofreeze.core.split import SplitError, split_at
from autofreeze.core.train import TrainConfig, Trainer
from autofreeze.data.tensors import tensor_fingerprint
from autofreeze.errors import PlanError
from autofreeze.plan import FreezePlan
from autofreeze.schedules import Gradual, Static
from autofreeze.study import records
from autofreeze.testing import tiny_split
from tests.models import block_sums, make

# (model, image size): one or two of each family the cache supports
FAMILIES = [
    ("resnet18", 64),
    ("resnext26ts", 64),
    ("convnext_atto", 64),
    ("efficientnet_b0", 64),
    ("mobilenetv2_050", 64),
    ("mobilenetv3_small_100", 64),
    ("mobilenetv4_conv_small", 64),
    ("regnetx_002", 64),
    ("vit_tiny_patch16_224", 224),
    ("deit_tiny_patch16_224", 224),
]
TOL = 1e-5  # float32: the split runs the same operations in the same order


@pytest.mark.parametrize(("name", "size"), FAMILIES)
def test_split_forward_equals_the_model_at_every_boundary(name, size):
    backbone = make(name)
    model = backbone.model.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
        for k in range(1, backbone.n_blocks):
            split = split_at(backbone, k)
            got = split.suffix_eval(split.prefix(x))
            assert torch.allclose(got, expected, atol=TOL), (name, k)


def plan_at(k: int, **kw) -> FreezePlan:
    return FreezePlan(boundary=k, head_lr=0.01, backbone_lr_ratio=0.5, **kw)


def trainer_for(backbone, plan, schedule_cls=Static, epochs=3):
    schedule = schedule_cls(boundary=plan.boundary, n_blocks=backbone.n_blocks, epochs=epochs)
    return Trainer(backbone, plan, schedule, TrainConfig(epochs=epochs, batch_size=8))


@pytest.mark.parametrize(
    ("name", "size"),
    [("resnet18", 32), pytest.param("vit_tiny_patch16_224", 224, marks=pytest.mark.slow)],
)
def test_cached_and_uncached_training_give_the_same_logits_loss_and_history(name, size):
    """The same batch in training mode (frozen blocks as the freezer runs them), then a whole
    run: cached and uncached agree to 1e-4 in every epoch's loss and accuracy."""
    train = tiny_split(16, size=size)
    val = tiny_split(8, size=size, seed=1)
    results = []
    for cached in (False, True):
        backbone = make(name)
        plan = plan_at(backbone.n_blocks // 2)
        trainer = trainer_for(backbone, plan, epochs=2)
        if cached:
            features = prefix_features(
                backbone, plan, train, val, PrefixCache(), weights="none", seed=0, device="cpu"
            )
            trainer.use_prefix(features.split)
            data = (features.train, features.val)
        else:
            data = (train, val)
        trainer.enter_phase(0)
        trainer.freezer.train_mode()
        torch.manual_seed(1)
        logits = trainer.forward(data[0].x[:8])
        results.append((logits.detach(), trainer.fit(*data)))
    (plain_logits, plain), (cached_logits, cached) = results
    assert torch.allclose(plain_logits, cached_logits, atol=1e-4)
    for a, b in zip(plain.history, cached.history, strict=True):
        assert abs(a.train_loss - b.train_loss) < 1e-4 and abs(a.val_loss - b.val_loss) < 1e-4
        assert a.val_accuracy == b.val_accuracy


def test_a_schedule_that_moves_the_boundary_caches_at_its_floor_and_keeps_frozen_blocks():
    """Gradual unfreezing from the head down to k: the prefix below k comes from the cache,
    blocks k.. run in the suffix (frozen, then training); the prefix stays bit-identical."""
    backbone = make("resnet10t")
    k = 2
    plan = plan_at(k, schedule="gradual")
    train, val = tiny_split(16), tiny_split(8, seed=1)
    before = block_sums(backbone)
    features = prefix_features(
        backbone, plan, train, val, PrefixCache(), weights="none", seed=0, device="cpu"
    )
    trainer = trainer_for(backbone, plan, Gradual, epochs=4)
    trainer.use_prefix(features.split)
    result = trainer.fit(features.train, features.val)
    assert [e.first_trainable for e in result.history] == [5, 4, 3, 2]
    after = block_sums(backbone)
    assert after[:k] == before[:k] and after[k] != before[k]


def test_what_the_cache_refuses():
    backbone = make("resnet10t")
    n = backbone.n_blocks
    assert prefix_cacheable(backbone, plan_at(2), augment=False)
    assert not prefix_cacheable(backbone, plan_at(2), augment=True)  # random views
    assert not prefix_cacheable(backbone, plan_at(2, bn_mode="train"), augment=False)
    assert not prefix_cacheable(backbone, plan_at(2, bn_mode="frozen"), augment=False)
    assert not prefix_cacheable(backbone, plan_at(0), augment=False)  # nothing frozen
    assert not prefix_cacheable(backbone, plan_at(n), augment=False)  # the pooled cache's case
    with pytest.raises(SplitError, match="no frozen prefix"):
        split_at(backbone, 0)


def test_a_prefix_with_a_random_module_outside_the_frozen_blocks_is_refused():
    """Dropout that runs in training mode before the boundary (here: ViT's pos_drop, which no
    block owns) would make the cached prefix differ from the trained one."""
    backbone = make("vit_tiny_patch16_224")
    backbone.model.pos_drop = torch.nn.Dropout(0.1)  # what pos_drop_rate=0.1 builds
    with pytest.raises(SplitError, match=r"pos_drop \(dropout p=0.1\)"):
        split_at(backbone, 3)


def key_of(**change):
    base = {
        "backbone": "resnet10t",
        "weights": "w.safetensors:100:1",
        "boundary": 2,
        "data": tensor_fingerprint(tiny_split(8).x),
    }
    return content_key(*{**base, **change}.values())


def test_the_key_changes_with_weights_data_preprocessing_size_and_boundary():
    x = tiny_split(8).x
    keys = {
        "same": key_of(),
        "weights": key_of(weights="w.safetensors:100:2"),
        "boundary": key_of(boundary=3),
        "data": key_of(data=tensor_fingerprint(tiny_split(8, seed=5).x)),
        "normalisation": key_of(data=tensor_fingerprint((x - 0.1) / 0.9)),
        "image size": key_of(data=tensor_fingerprint(tiny_split(8, size=16).x)),
    }
    assert key_of() == keys["same"]
    assert len(set(keys.values())) == len(keys)


def pair(n: int, value: float = 1.0):
    return torch.full((n, 256), value), torch.full((n // 2, 256), value)


def test_memory_and_disk_bounds_evict_the_least_recently_used(tmp_path):
    one = sum(t.numel() * 4 for t in pair(64))
    in_memory = PrefixCache(memory_bytes=2 * one)  # no folder: a worker's own LRU
    for key in ("a", "b", "c"):
        in_memory.get(key, lambda: pair(64))
    assert list(in_memory._memory) == ["b", "c"]
    cache = PrefixCache(tmp_path, memory_bytes=2 * one, disk_bytes=int(2.5 * one))
    for key in ("a", "b", "c"):
        cache.get(key, lambda: pair(64))
        time.sleep(0.01)
    assert not cache._memory  # with a folder the entries are on disk only (mapped when read)
    on_disk = sorted(p.stem for p in tmp_path.glob("*.pt"))
    assert on_disk == ["b", "c"]
    assert sum(p.stat().st_size for p in tmp_path.glob("*.pt")) <= 2.5 * one
    again = PrefixCache(tmp_path)  # another worker: reads the file, computes nothing
    got = again.get("c", lambda: pytest.fail("recomputed an entry on disk"))
    assert again.disk_hits == 1 and torch.equal(got[0], pair(64)[0])


def test_a_corrupt_or_half_written_entry_is_never_read(tmp_path):
    (tmp_path / "k.pt").write_bytes(b"PK\x03\x04 cut short")  # what a crash could have left
    (tmp_path / ".k.123.tmp").write_bytes(b"half")  # a writer killed before its rename
    cache = PrefixCache(tmp_path)
    got = cache.get("k", lambda: pair(8, 2.0))
    assert cache.misses == 1 and float(got[0][0, 0]) == 2.0
    assert PrefixCache(tmp_path).get("k", lambda: pair(8, 3.0))[0][0, 0] == 2.0


WRITER = """
import sys, time, torch
from pathlib import Path
from autofreeze.cache.activations import PrefixCache
folder = Path(sys.argv[1])
(folder.parent / f"ready-{sys.argv[2]}").touch()
while not (folder.parent / "go").exists():
    time.sleep(0.002)
def compute():
    time.sleep(0.5)  # slow enough that both would write without the lock
    return torch.full((64, 32), float(sys.argv[2])), torch.zeros(8, 32)
cache = PrefixCache(folder)
train, _ = cache.get("same", compute)
print(cache.misses, cache.disk_hits, float(train[0, 0]))
"""


def test_two_processes_writing_the_same_entry_compute_it_once_and_leave_one_file(tmp_path):
    folder = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(i)], stdout=subprocess.PIPE, text=True
        )
        for i in (1, 2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert sorted((o[0], o[1]) for o in outs) == [("0", "1"), ("1", "0")], outs
    assert outs[0][2] == outs[1][2]  # both trained on the one entry that was written
    assert [p.name for p in folder.iterdir() if p.suffix == ".pt"] == ["same.pt"]
    assert not list(folder.glob(".*.tmp"))


def test_frozen_blocks_are_bit_identical_with_the_cache():
    backbone = make("resnet10t")
    plan = plan_at(3)
    train, val = tiny_split(16), tiny_split(8, seed=1)
    frozen = [state_checksum(backbone.parameters_of(b.param_names)) for b in backbone.blocks[:3]]
    features = prefix_features(
        backbone, plan, train, val, PrefixCache(), weights="none", seed=0, device="cpu"
    )
    trainer = trainer_for(backbone, plan, epochs=2)
    trainer.use_prefix(features.split)
    trainer.fit(features.train, features.val)
    assert frozen == [
        state_checksum(backbone.parameters_of(b.param_names)) for b in backbone.blocks[:3]
    ]


def test_a_study_serves_its_trials_from_the_prefix_cache_with_the_uncached_results(tmp_path):
    """Same study with and without the cache: the same plans reach the same values; the first
    trial computes the prefix, the others read it; the entry is on disk beside the config."""
    import optuna
    from click.testing import CliRunner

    from autofreeze.cli import cli
    from tests.studies import write_study

    values = {}
    for cache in ("true", "false"):
        config = write_study(
            tmp_path,
            f"pc_{cache}",
            n_trials=3,
            epochs=2,
            pruner="none",
            study_extra="baselines = false",
            search='boundary = 2\nschedules = ["static", "gradual"]\ninit = "pretrained"',
        )
        text = config.read_text().replace("[training]\n", f"[training]\nfeature_cache = {cache}\n")
        config.write_text(text)
        result = CliRunner().invoke(cli, ["search", str(config)])
        assert result.exit_code == 0, result.output
        trials = optuna.load_study(
            study_name=f"pc_{cache}", storage=f"sqlite:///{tmp_path}/pc_{cache}.db"
        ).trials
        values[cache] = [t.value for t in trials]
        if cache == "true":
            assert [records.cache(t) for t in trials] == [
                {"kind": "prefix", "boundary": 2, "source": source}
                for source in ("computed", "disk", "disk")
            ]
        else:
            assert all(records.cache(t) is None for t in trials)
    assert values["true"] == pytest.approx(values["false"], abs=1e-6)
    assert len(list((tmp_path / ".autofreeze-cache").glob("*.pt"))) == 1


def test_a_schedule_that_would_train_below_the_cached_prefix_is_stopped():
    """Schedules are clamped to the plan's boundary; one that is not (a plugin's bug) must
    not train cached blocks as if they had run: the freezer refuses any block below the plan's
    boundary, which is where the prefix is cut."""

    class Rogue(Static):
        def clamp(self, first_trainable: int) -> int:
            return 0

    backbone = make("resnet10t")
    plan = plan_at(2)
    train, val = tiny_split(16), tiny_split(8, seed=1)
    features = prefix_features(
        backbone, plan, train, val, PrefixCache(), weights="none", seed=0, device="cpu"
    )
    trainer = trainer_for(backbone, plan, Rogue, epochs=1)
    trainer.use_prefix(features.split)
    with pytest.raises(PlanError, match="first trainable block 0 is below the boundary 2"):
        trainer.fit(features.train, features.val)


def test_the_fingerprint_of_large_and_tiny_tensors():
    """Every sampled index in range whatever the size (float32 rounding once pointed past the
    end of a 38.5M-element tensor), and the same tensor gives the same fingerprint."""
    for n in (1, 2, 4097, 38_535_168):
        t = torch.arange(n, dtype=torch.float32)
        assert tensor_fingerprint(t) == tensor_fingerprint(t.clone())
    assert tensor_fingerprint(torch.zeros(10)) != tensor_fingerprint(torch.ones(10))


def test_blocks_a_schedule_freezes_for_good_are_cached_from_then_on():
    """FreezeOut freezes blocks toward the head as training goes: from the epoch a block
    freezes, the trainer trains on the cached output of the blocks below the new boundary.
    The run is the same as without the cache, and gradual unfreezing (which moves the other
    way) is never cached this way."""
    from autofreeze.cache.activations import refreezer
    from autofreeze.schedules._freezeout import FreezeOut

    train, val = tiny_split(16), tiny_split(8, seed=1)
    runs = []
    for cached in (False, True):
        backbone = make("resnet10t")
        plan = plan_at(0, schedule="freezeout")
        trainer = trainer_for(backbone, plan, FreezeOut, epochs=6)
        if cached:
            trainer.refreeze = refreezer(backbone, train, val, "cpu")
        runs.append((trainer, trainer.fit(train, val)))
    (_, plain), (trainer, cached) = runs
    firsts = [e.first_trainable for e in cached.history]
    assert firsts == [e.first_trainable for e in plain.history] and firsts[-1] > 1, firsts
    assert trainer.cached_at == firsts[-1]
    said = [e for e in cached.events if "their output is cached" in e]
    assert len(said) == len({f for f in firsts if 0 < f < 5}), cached.events
    for a, b in zip(plain.history, cached.history, strict=True):
        assert abs(a.train_loss - b.train_loss) < 1e-4 and a.val_accuracy == b.val_accuracy
    backbone = make("resnet10t")
    gradual = trainer_for(backbone, plan_at(0, schedule="gradual"), Gradual, epochs=3)
    gradual.refreeze = lambda first: pytest.fail("gradual unfreezing is never frozen for good")
    gradual.fit(train, val)


def test_prefix_outputs_larger_than_the_memory_bound_are_refused_not_computed():
    """A large dataset must not be copied into memory as activations: outputs above the
    memory bound of a cache without a folder raise SplitError (the trial runs uncached and
    says why); with a folder they go to disk as rows (tests/cache/test_prefix_store.py)."""
    backbone = make("resnet10t")
    plan = plan_at(2)
    train, val = tiny_split(16), tiny_split(8, seed=1)
    small = PrefixCache(memory_bytes=1024)
    with pytest.raises(SplitError, match="above the cache's memory bound"):
        prefix_features(backbone, plan, train, val, small, weights="none", seed=0, device="cpu")
    assert small.misses == 0  # nothing computed
    roomy = PrefixCache(memory_bytes=2**30)
    got = prefix_features(backbone, plan, train, val, roomy, weights="none", seed=0, device="cpu")
    assert got.source == "computed" and len(got.train) == 16


def test_prefix_outputs_of_a_tensor_and_of_its_batches_agree():
    from autofreeze.core.split import prefix_outputs

    backbone = make("resnet10t")
    backbone.model.eval()
    split = split_at(backbone, 2)
    x = tiny_split(10).x
    with torch.no_grad():
        whole = prefix_outputs(split, x, batch_size=4)  # a tensor, batched here
        parts = prefix_outputs(split, iter(x.split(3)))  # batches given
    assert whole.shape[0] == 10 and torch.allclose(whole, parts, atol=1e-6)
