"""Datasets of files decoded once into a uint8 file: keys, sharing, crashes, corrupt images,
and splits larger than memory streamed from disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autofreeze.data.decode import Decoding, decode_split
from autofreeze.data.images import ImageSet, to_tensors
from autofreeze.data.tensors import DiskImages, TensorSplit
from autofreeze.errors import DatasetError

ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def pictures(folder: Path, n: int, size: tuple[int, int] = (20, 14)) -> ImageSet:
    rng = np.random.default_rng(n)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return ImageSet(paths, [i % 3 for i in range(n)])


def decode(images, folder, said=None, *, mean=MEAN, size=12, **kw):
    kw = {"folder": folder, "memory_bytes": 2**30, **kw}
    decoding = Decoding(**kw, progress=(said.append if said is not None else print))
    return decode_split(images, mean=mean, std=STD, size=size, decoding=decoding)


def test_files_are_decoded_once_into_a_file_that_later_runs_read(tmp_path):
    images = pictures(tmp_path / "img", 10)
    store = tmp_path / "store"
    said: list[str] = []
    first = decode(images, store, said)
    assert any("decoding" in s for s in said)
    assert [p.suffix for p in sorted(store.glob("*.u8"))] == [".u8"]
    again: list[str] = []
    other_norm = decode(images, store, again, mean=(0.1, 0.2, 0.3))  # another backbone's
    assert again == []  # read, not decoded: normalisation is not in the key
    plain = to_tensors(images, mean=MEAN, std=STD, size=12)  # the in-memory path
    assert first.x.dtype == torch.uint8 and torch.equal(first.x, plain.x)
    assert torch.equal(other_norm.x, plain.x) and other_norm.mean == (0.1, 0.2, 0.3)
    assert torch.equal(first.y, plain.y)


def test_the_key_changes_with_a_file_or_the_image_size_and_not_otherwise(tmp_path):
    images = pictures(tmp_path / "img", 6)
    store = tmp_path / "store"
    decode(images, store)
    decode(ImageSet(list(images.images), list(images.labels)), store)  # the same files
    assert len(list(store.glob("*.u8"))) == 1
    decode(images, store, size=10)
    assert len(list(store.glob("*.u8"))) == 2
    path = Path(images.images[3])
    Image.new("RGB", (20, 14), (1, 2, 3)).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = decode(images, store)
    assert len(list(store.glob("*.u8"))) == 3
    assert changed.x[3].flatten(1).tolist()[0][0] == 1  # the new pixels, not the old file's


def test_a_corrupt_image_is_named_and_skipped_only_when_allowed(tmp_path):
    images = pictures(tmp_path / "img", 8)
    bad = Path(images.images[5])
    bad.write_bytes(b"not a png")
    store = tmp_path / "store"
    with pytest.raises(DatasetError) as err:
        decode(images, store)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message and "skip_bad_images = true" in message
    said: list[str] = []
    kept = decode(images, store, said, skip_bad=True)
    assert len(kept) == 7 and kept.y.tolist() == [y for i, y in enumerate(images.labels) if i != 5]
    assert any("left out" in s and str(bad) in s for s in said)
    expected = to_tensors(
        ImageSet(images.images[:5] + images.images[6:], kept.y.tolist()),
        mean=MEAN,
        std=STD,
        size=12,
    )
    assert torch.equal(kept.x, expected.x)  # the rows that decoded, in order
    with pytest.raises(DatasetError, match="skip_bad_images"):  # the stored file says so too
        decode(images, store)


WRITER = """
import sys, time
from pathlib import Path
from autofreeze.data.images import ImageSet
from autofreeze.data.decode import Decoding, decode_split
paths = sys.argv[2:]

class Slow(list):
    def __getitem__(self, i):
        if {slow}:
            time.sleep(0.05)
        return list.__getitem__(self, i)

labels = [i % 3 for i in range(len(paths))]
images = ImageSet(Slow(paths), labels, identity="slow-" + str(len(paths)))
decoding = Decoding(folder=Path(sys.argv[1]), memory_bytes=2**30, workers=1,
                    progress=lambda m: print(m, flush=True))
split = decode_split(images, mean=(0.5,) * 3, std=(0.2,) * 3, size=12, decoding=decoding)
print("sum", int(split.x.long().sum()), flush=True)
"""


def writer(folder: Path, paths: list[str], slow: bool) -> subprocess.Popen:
    code = textwrap.dedent(WRITER).replace("{slow}", str(slow))
    return subprocess.Popen(
        [sys.executable, "-c", code, str(folder), *paths],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_a_crash_while_writing_leaves_nothing_that_is_later_read(tmp_path):
    images = pictures(tmp_path / "img", 40)
    store = tmp_path / "store"
    proc = writer(store, list(images.images), slow=True)
    deadline = time.time() + 60
    while not list(store.glob(".*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # part of the file written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (
        list(store.glob(".*.tmp"))
        and not list(store.glob("*.json"))
        and not list(store.glob("*.u8"))
    )
    again = writer(store, list(images.images), slow=False)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "decoding" in out  # decoded again, not read half-written
    assert not list(store.glob(".*.tmp"))  # the crashed writer's file is gone
    expected = to_tensors(images, mean=MEAN, std=STD, size=12).x.long().sum()
    assert f"sum {int(expected)}" in out


@pytest.mark.slow
def test_two_processes_started_together_decode_once(tmp_path):
    images = pictures(tmp_path / "img", 30)
    store = tmp_path / "store"
    procs = [writer(store, list(images.images), slow=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum("decoding" in out for out in outs) == 1, outs
    sums = {line for out in outs for line in out.splitlines() if line.startswith("sum")}
    assert len(sums) == 1 and len(list(store.glob("*.u8"))) == 1


def test_many_images_are_decoded_in_parallel_processes_with_the_same_result(tmp_path):
    images = pictures(tmp_path / "img", 300)
    serial = decode(images, tmp_path / "one", workers=1)
    parallel = decode(images, tmp_path / "two", workers=2)
    assert torch.equal(serial.x, parallel.x)


STREAM = """
import os, sys, torch
from autofreeze.data.tensors import DiskImages, TensorSplit
n, size, mode = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
page = os.sysconf("SC_PAGE_SIZE")

def rss():  # resident now (statm), not the peak: torch's import peaks higher than its use
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

torch.manual_seed(0)
torch.zeros(1).mean()
before, peak = rss(), 0
x = DiskImages(sys.argv[1], n, size, "k")
if mode == "memory":
    x = x.read(slice(None))
split = TensorSplit(x, torch.zeros(n, dtype=torch.long), mean=(0.5,) * 3, std=(0.2,) * 3)
total = 0.0
for rows in torch.randperm(n).split(32):  # a training epoch's batches
    total += float(split.batch(rows).sum(dtype=torch.float64))
    peak = max(peak, rss())
for chunk in split.chunks(32):  # an evaluation pass
    total += float(chunk.sum(dtype=torch.float64))
    peak = max(peak, rss())
print((peak - before) // 2**20, round(total, 1))
"""


BOUND_MB = 128


@pytest.mark.slow
def test_a_split_larger_than_the_bound_streams_with_flat_memory(tmp_path):
    """A 287 MB uint8 file (2.2x a bound of 128 MB) read by random batches and in order:
    the process grows by less than the bound (resident memory sampled at every batch), while
    reading it into memory grows by all of it; both give the same batches."""
    n, size = 2000, 224
    path = tmp_path / "big.u8"
    rows = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, 3, size, size))
    rows[:] = np.random.default_rng(0).integers(0, 256, rows.shape, dtype=np.uint8)
    rows.flush()
    del rows
    mb = path.stat().st_size / 2**20
    got = {}
    for mode in ("disk", "memory"):
        out = subprocess.run(
            [sys.executable, "-c", STREAM, str(path), str(n), str(size), mode],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout.split()
        got[mode] = (int(out[0]), out[1])
    assert got["disk"][0] < BOUND_MB < mb / 2, (got, mb)  # under a bound of under half the data
    assert got["memory"][0] > 0.9 * mb, (got, mb)  # the measure sees a dataset in memory
    assert got["disk"][1] == got["memory"][1]


def test_training_on_a_streamed_split_equals_training_in_memory(tmp_path):
    from autofreeze.core.train import TrainConfig, Trainer
    from autofreeze.plan import FreezePlan
    from autofreeze.schedules import Static
    from tests.models import make

    images = pictures(tmp_path / "img", 24)
    on_disk = decode(images, tmp_path / "store", memory_bytes=1)
    assert isinstance(on_disk.x, DiskImages)
    in_memory = decode(images, tmp_path / "store")
    assert isinstance(in_memory.x, torch.Tensor)
    val = TensorSplit(in_memory.x[:6], in_memory.y[:6], mean=MEAN, std=STD)
    runs = []
    for train in (on_disk, in_memory):
        backbone = make("resnet10t")
        plan = FreezePlan(boundary=2, head_lr=0.01, backbone_lr_ratio=0.5)
        schedule = Static(boundary=2, n_blocks=backbone.n_blocks, epochs=2)
        cfg = TrainConfig(epochs=2, batch_size=8, augment=True)
        runs.append(Trainer(backbone, plan, schedule, cfg).fit(train, val).history)
    assert [e.train_loss for e in runs[0]] == [e.train_loss for e in runs[1]]
    meta = json.loads(next((tmp_path / "store").glob("*.json")).read_text())
    assert meta["n"] == 24 and meta["bad"] == []


def test_decoding_shows_a_bar_on_a_terminal_and_lines_in_a_log(tmp_path, monkeypatch):
    import io

    import autofreeze.data.decode as decode_module

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    images = pictures(tmp_path / "img", 6)
    screen = Terminal()
    monkeypatch.setattr(decode_module.sys, "stderr", screen)
    said: list[str] = []
    decode(images, tmp_path / "a", said)
    assert "decoding images" in screen.getvalue() and "img" in screen.getvalue()  # tqdm's bar
    monkeypatch.setattr(decode_module.sys, "stderr", io.StringIO())  # a log: no bar
    decode(images, tmp_path / "b", said)
    assert [s for s in said if "kept for later runs" in s] and len(said) == 2
