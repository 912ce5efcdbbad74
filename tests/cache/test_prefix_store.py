"""Prefix outputs above the cache's memory bound: 16-bit rows in a file of the cache folder,
written batch by batch and read by the rows of each batch (round trip, accuracy, training,
sharing, truncated and corrupt files, refusals)."""

from __future__ import annotations

import threading

import optuna
import pytest
import torch

from autofreeze.cache.activations import PrefixCache, prefix_features
from autofreeze.cache.store import CacheFull, RowLayout
from autofreeze.config import load_config
from autofreeze.core.split import SplitError
from autofreeze.core.train import TrainConfig, Trainer
from autofreeze.data.tensors import RowCorrupt, RowFile
from autofreeze.plan import FreezePlan
from autofreeze.runs.prepare import prepare
from autofreeze.schedules import Static
from autofreeze.search.objective import Objective
from autofreeze.search.run import search_space
from autofreeze.study import records
from autofreeze.testing import tiny_split
from tests.models import make
from tests.studies import write_study

TINY = 1024  # bytes: every entry of these tests is above it
PLAN = FreezePlan(boundary=2, head_lr=0.01, backbone_lr_ratio=0.5)


def features(cache, train, val, dtype="float32", backbone=None):
    backbone = backbone or make("resnet10t")
    got = prefix_features(
        backbone, PLAN, train, val, cache, weights="none", seed=0, device="cpu", dtype=dtype
    )
    return backbone, got


def test_rows_on_disk_are_the_float16_rounding_of_the_float32_outputs(tmp_path):
    """Round trip: the rows read back are bit for bit the float32 outputs rounded to float16
    (relative error at most 2^-11), in the order of the images; a second call reads the file
    without computing."""
    train, val = tiny_split(20), tiny_split(7, seed=1)
    _, exact = features(PrefixCache(), train, val)  # float32, in memory
    disk = PrefixCache(tmp_path, memory_bytes=TINY)
    _, got = features(disk, train, val)
    assert got.source == "computed" and disk.misses == 1
    assert isinstance(got.train.x, RowFile) and got.train.on_disk and got.val.on_disk
    assert got.train.x.dtype == torch.float16
    rows = {"train": got.train.rows(slice(None)), "val": got.val.rows(slice(None))}
    for name, ref in (("train", exact.train.x), ("val", exact.val.x)):
        assert torch.equal(rows[name], ref.to(torch.float16)), name
        err = (rows[name].float() - ref).abs()
        assert bool((err <= ref.abs() * 2**-11 + 2**-24).all()), name
    picked = torch.tensor([19, 0, 5, 5, 11])
    assert torch.equal(got.train.rows(picked), rows["train"][picked])
    assert torch.equal(got.train.y, train.y) and torch.equal(got.val.y, val.y)
    # the file holds exactly the rows, 2 bytes each
    (path,) = tmp_path.glob("*.rows")
    assert path.stat().st_size == (27 * exact.train.x[0].numel()) * 2
    _, again = features(disk, train, val)
    assert again.source == "disk" and disk.misses == 1 and disk.disk_hits == 1
    assert torch.equal(again.val.rows(slice(None)), rows["val"])


def test_bfloat16_is_kept_where_the_config_asks_for_it(tmp_path):
    train, val = tiny_split(8), tiny_split(4, seed=1)
    _, exact = features(PrefixCache(), train, val)
    _, got = features(PrefixCache(tmp_path, memory_bytes=TINY), train, val, dtype="bfloat16")
    assert got.train.x.dtype == torch.bfloat16
    assert torch.equal(got.train.rows(slice(None)), exact.train.x.to(torch.bfloat16))


def train_on(backbone, got, epochs=2):
    schedule = Static(boundary=PLAN.boundary, n_blocks=backbone.n_blocks, epochs=epochs)
    trainer = Trainer(backbone, PLAN, schedule, TrainConfig(epochs=epochs, batch_size=8))
    trainer.use_prefix(got.split)
    return trainer.fit(got.train, got.val)


@pytest.mark.slow  # three trainings: about 10 s
def test_training_from_the_disk_rows_equals_the_in_memory_float16_cache(tmp_path):
    """A trial whose prefix is above the memory bound trains from the file: the same losses
    to the last bit as the same 16-bit outputs held in memory, and within 1e-3 of float32."""
    train, val = tiny_split(24), tiny_split(12, seed=1)
    runs = {}
    for name, cache, dtype in (
        ("float32", PrefixCache(), "float32"),
        ("float16", PrefixCache(), "float16"),
        ("disk", PrefixCache(tmp_path, memory_bytes=TINY), "float32"),
    ):
        torch.manual_seed(0)
        backbone, got = features(cache, train, val, dtype)
        assert got.train.on_disk == (name == "disk")
        history = train_on(backbone, got).history
        runs[name] = [(e.train_loss, e.val_loss, e.val_accuracy) for e in history]
    assert runs["disk"] == runs["float16"]
    for a, b in zip(runs["disk"], runs["float32"], strict=True):
        assert abs(a[0] - b[0]) < 1e-3 and abs(a[1] - b[1]) < 1e-3


def test_a_truncated_file_is_computed_again_and_a_corrupt_row_stops_with_one_line(tmp_path):
    train, val = tiny_split(10), tiny_split(4, seed=1)
    cache = PrefixCache(tmp_path, memory_bytes=TINY)
    _, first = features(cache, train, val)
    good = first.train.rows(slice(None))
    (path,) = tmp_path.glob("*.rows")
    size = path.stat().st_size
    with open(path, "r+b") as f:  # a half-written file (a copy cut short, a full disk)
        f.truncate(size // 2)
    _, again = features(cache, train, val)
    assert again.source == "computed" and cache.misses == 2  # not read: computed anew
    assert path.stat().st_size == size and torch.equal(again.train.rows(slice(None)), good)
    with open(path, "r+b") as f:  # one byte changed in row 3 (same size: the sidecar agrees)
        f.seek(3 * first.train.x.row_bytes + 100)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    _, third = features(cache, train, val)
    assert third.source == "disk"
    assert torch.equal(third.train.rows(torch.tensor([0, 1, 2, 4])), good[[0, 1, 2, 4]])
    with pytest.raises(RowCorrupt, match=r"\.rows was corrupt \(row 3 does not match") as exc:
        third.train.rows(torch.tensor([5, 3]))
    assert "\n" not in str(exc.value)
    assert not path.exists()  # deleted: the next trial computes it anew
    _, fourth = features(cache, train, val)
    assert fourth.source == "computed" and torch.equal(fourth.train.rows(slice(None)), good)


def test_what_cannot_be_stored_is_refused_in_one_line_before_it_is_computed(tmp_path):
    train, val = tiny_split(10), tiny_split(4, seed=1)
    bounded = PrefixCache(tmp_path, memory_bytes=TINY, disk_bytes=TINY)
    with pytest.raises(SplitError, match="above the cache's disk bound of 0.0 GiB") as exc:
        features(bounded, train, val)
    assert "\n" not in str(exc.value) and bounded.misses == 0
    assert not list(tmp_path.glob("*.rows"))
    nowhere = PrefixCache(memory_bytes=TINY)  # no folder: refused as before
    with pytest.raises(SplitError, match="above the cache's memory bound"):
        features(nowhere, train, val)


def test_outputs_beyond_float16s_range_are_refused_never_stored_as_infinities(tmp_path):
    cache = PrefixCache(tmp_path)
    layout = RowLayout(2, 1, (3,), "float16")
    big = torch.tensor([[1.0, 7e4, 2.0], [0.0, 1.0, 2.0]])
    with pytest.raises(CacheFull, match="reach 7e\\+04, beyond float16's range"):
        cache.get_rows("k", layout, lambda: ([big], [big[:1]]))
    assert not list(tmp_path.glob("*.rows")) and not list(tmp_path.glob(".*.tmp"))
    # bfloat16 keeps float32's range
    wide = RowLayout(2, 1, (3,), "bfloat16")
    train, _ = cache.get_rows("w", wide, lambda: ([big], [big[:1]]))
    assert torch.equal(train.read(slice(None)), big.to(torch.bfloat16))


def test_workers_asking_for_one_entry_at_once_compute_it_once(tmp_path):
    """One writer per key (the lock): the other waits and reads its file; no half file is
    ever read."""
    layout = RowLayout(64, 8, (16, 4, 4), "float16")
    calls = []
    rows = torch.randn(72, 16, 4, 4)

    def compute():
        calls.append(1)

        def slow(x):
            for chunk in x.split(8):
                threading.Event().wait(0.02)  # a slow prefix: the other worker arrives meanwhile
                yield chunk

        return slow(rows[:64]), slow(rows[64:])

    caches = [PrefixCache(tmp_path), PrefixCache(tmp_path)]
    got: list = [None, None]

    def ask(i):
        got[i] = caches[i].get_rows("same", layout, compute)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(c.disk_hits for c in caches) == [0, 1]
    for train, val in got:
        assert torch.equal(train.read(slice(None)), rows[:64].half())
        assert torch.equal(val.read(slice(None)), rows[64:].half())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "same.lock",
        "same.rows",
        "same.rows.json",
    ]


FIXED = """boundary = 2
schedules = "static"
init = "scratch"
bn_mode = "eval"
head_lr = 0.003
backbone_lr_ratio = 0.3
layer_decay = 1.0
weight_decay = 0.0"""


@pytest.mark.slow  # three trials through the objective: about 19 s
def test_a_trial_above_the_memory_bound_trains_from_the_disk_rows(tmp_path):
    """Through the objective: a worker whose memory bound is below the prefix outputs keeps
    its cache (on disk, computed then read) and gets the results of a worker that holds them
    in memory (16 bits against float32: the same accuracy, losses within 1e-3)."""
    config = write_study(tmp_path, weights="none", epochs=2, search=FIXED)
    prepared = prepare(load_config(config))
    results = {}
    for name, bound in (("memory", None), ("disk", TINY), ("disk again", TINY)):
        objective = Objective(prepared, search_space(prepared))
        if bound is not None:
            objective.prefixes.memory_bytes = bound
        trial = optuna.trial.FixedTrial({}, number=0)
        value = objective(trial)
        results[name] = (value, records.cache(trial)["source"], trial.user_attrs)
    assert results["memory"][1] == "computed"
    assert results["disk"][1] == "computed" and results["disk again"][1] == "disk"
    assert len(list((tmp_path / ".autofreeze-cache").glob("*.rows"))) == 1
    assert results["disk"][0] == results["disk again"][0]
    last = {name: got[2]["history"][-1] for name, got in results.items()}
    assert last["disk"] == last["disk again"]
    assert last["disk"]["val_accuracy"] == last["memory"]["val_accuracy"]
    for key in ("train_loss", "val_loss"):
        assert abs(last["disk"][key] - last["memory"][key]) < 1e-3, (key, last)


def test_cached_views_go_to_disk_view_major_like_the_in_memory_entry(tmp_path):
    from autofreeze.cache.activations import Views

    train, val = tiny_split(6), tiny_split(3, seed=1)
    views = Views(2, 0, "flip")
    got = {}
    for name, cache in (
        ("memory", PrefixCache()),
        ("disk", PrefixCache(tmp_path, memory_bytes=TINY)),
    ):
        got[name] = prefix_features(
            make("resnet10t"),
            PLAN,
            train,
            val,
            cache,
            weights="none",
            seed=0,
            device="cpu",
            dtype="float16",
            views=views,
        )
    disk, memory = got["disk"], got["memory"]
    assert disk.train.on_disk and disk.train.views == 2 and disk.train.x.shape[0] == 12
    assert torch.equal(disk.train.rows(slice(None)), memory.train.x)
    assert torch.equal(disk.val.rows(slice(None)), memory.val.x)
