"""Two splits joined for ``train --on train+val``: in memory where both are, a view that reads
each batch's rows from where they are where a split is streamed from disk (no copy of
either)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autofreeze.core import train as train_module
from autofreeze.core.backbones import state_checksum
from autofreeze.data.tensors import DiskImages, JoinedRows, TensorSplit, cat
from tests.data.test_decode import decode, pictures

ROOT = Path(__file__).resolve().parents[2]


def test_streamed_splits_join_as_a_view_with_the_rows_of_the_in_memory_join(tmp_path):
    train_images, val_images = pictures(tmp_path / "a", 13), pictures(tmp_path / "b", 9)
    store = tmp_path / "store"
    streamed = [decode(i, store, memory_bytes=1) for i in (train_images, val_images)]
    held = [decode(i, store) for i in (train_images, val_images)]
    assert all(s.on_disk for s in streamed) and not any(h.on_disk for h in held)
    joined, plain = cat(*streamed), cat(*held)
    assert isinstance(plain.x, torch.Tensor) and plain.x.shape == (22, 3, 12, 12)
    # no copy: the view holds the two files' readers, nothing of their rows
    assert isinstance(joined.x, JoinedRows) and joined.on_disk
    assert joined.x.a is streamed[0].x and joined.x.b is streamed[1].x
    assert len(joined) == 22 and joined.x.shape == plain.x.shape
    assert torch.equal(joined.y, plain.y) and (joined.mean, joined.std) == (plain.mean, plain.std)
    assert torch.equal(joined.rows(slice(None)), plain.x)
    for index in (torch.tensor([21, 0, 12, 13, 5, 13]), slice(10, 16), slice(14, 22)):
        assert torch.equal(joined.batch(index), plain.batch(index)), index
    assert torch.equal(torch.cat(list(joined.chunks(5))), torch.cat(list(plain.chunks(5))))
    # one split streamed, the other in memory (a small val split fits)
    mixed = cat(streamed[0], held[1])
    assert isinstance(mixed.x, JoinedRows) and mixed.x.b is held[1].x
    assert torch.equal(mixed.rows(torch.tensor([20, 1, 14])), plain.x[[20, 1, 14]])
    assert joined.fingerprint() != mixed.fingerprint() != plain.fingerprint()


def test_splits_of_other_preprocessing_are_not_joined(tmp_path):
    a = decode(pictures(tmp_path / "a", 4), tmp_path / "s", memory_bytes=1)
    b = decode(pictures(tmp_path / "b", 4), tmp_path / "s", memory_bytes=1, mean=(0, 0, 0))
    with pytest.raises(ValueError, match="different preprocessing"):
        cat(a, b)


# Joins two uint8 splits of 37 MB each, streamed from files and held in memory, and reads
# every row of the join once in random batches of 32 (what an epoch does): for each, the peak
# RSS (VmHWM, reset before) above the RSS before the join.
PEAK = """
import json, re, sys, torch
from pathlib import Path
from autofreeze.data.tensors import DiskImages, TensorSplit, cat

def status(field):
    text = open("/proc/self/status").read()
    return int(re.search(field + r":\\s+(\\d+)", text).group(1)) * 1024

folder, n, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def split(name, held):
    x = DiskImages(folder / f"{name}.u8", n, size, name)
    if held:
        x = x.read(slice(None))
    return TensorSplit(x, torch.zeros(n, dtype=torch.long), mean=(0.5,) * 3, std=(0.5,) * 3)
warm = cat(split("a", False), split("b", False))  # first-call allocations, outside the figures
for idx in torch.randperm(2 * n, generator=torch.Generator().manual_seed(1))[:256].split(32):
    warm.batch(idx).sum()
del warm
got = {}
for mode in ("streamed", "memory"):
    before = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here
    joined = cat(split("a", mode == "memory"), split("b", mode == "memory"))
    total = 0.0
    for idx in torch.randperm(2 * n, generator=torch.Generator().manual_seed(0)).split(32):
        total += float(joined.batch(idx).sum())
    got[mode] = {"rise": status("VmHWM") - before, "sum": total}
    del joined
print(json.dumps(got))
"""


@pytest.mark.slow  # a process of its own: about 4 s
def test_the_streamed_join_holds_no_copy_of_the_splits(tmp_path):
    """Peak memory of an epoch over the join: the in-memory join holds both splits (twice,
    while it is made); the streamed one a batch."""
    n, size = 3000, 64  # 37 MB a split
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        rng.integers(0, 256, n * 3 * size * size, dtype=np.uint8).tofile(tmp_path / f"{name}.u8")
    split_bytes = n * 3 * size * size
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(tmp_path), str(n), str(size)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["streamed"]["sum"] == pytest.approx(got["memory"]["sum"], rel=1e-9)
    assert got["memory"]["rise"] > 2 * split_bytes, got  # both splits, in memory
    assert got["streamed"]["rise"] < 0.25 * split_bytes, got  # batches, not a split


CONFIG = """
[study]
name = "joined"
storage = "sqlite:///joined.db"

[backbone]
name = "resnet10t"
weights = "none"

[dataset]
name = "imagefolder"
path = "images"

[training]
epochs = 1
batch_size = 16
image_size = 64
data_memory = {memory}
decode_workers = 1
"""


def image_folder(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(3):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 200, (64, 64, 3), dtype=np.uint8)
                pixels[..., c] += 55  # learnable: the class is the brightest channel
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.mark.slow  # decodes 180 images and trains twice: 7-20 s
def test_train_on_train_and_val_streamed_trains_as_the_in_memory_join(tmp_path, monkeypatch):
    """``train --on train+val`` with both splits above ``data_memory``: the final training
    reads the joined view (both splits stay on disk) and gives the weights of the same
    training on the in-memory join, to the last bit."""
    from autofreeze.config import load_config
    from autofreeze.plan import FreezePlan
    from autofreeze.runs.checkpoint import train_checkpoint

    image_folder(tmp_path / "images", 30)  # 90 images a split: 1.06 MiB at 64 px, above 1 MiB
    seen: dict[str, object] = {}
    fit = train_module.fit

    def watched(backbone, plan, schedule, train, *args, **kwargs):
        seen["train"] = train
        result = fit(backbone, plan, schedule, train, *args, **kwargs)
        seen["checksum"] = state_checksum(backbone.model.state_dict().values())
        return result

    monkeypatch.setattr(train_module, "fit", watched)
    plan = FreezePlan(boundary=3, head_lr=0.01, backbone_lr_ratio=0.3)
    got = {}
    for name, memory in (("streamed", 1), ("memory", 1024)):
        config = tmp_path / f"{name}.toml"
        config.write_text(CONFIG.format(memory=memory))
        monkeypatch.setattr("autofreeze.runs.prepare._decoded", {})  # decoded splits per process
        info = train_checkpoint(
            load_config(config), plan, tmp_path / f"{name}.safetensors", on="train+val"
        )
        train = seen["train"]
        assert isinstance(train, TensorSplit) and len(train) == 180
        got[name] = (train.x, seen["checksum"], info["metrics"])
    streamed, memory = got["streamed"][0], got["memory"][0]
    assert isinstance(streamed, JoinedRows)
    assert isinstance(streamed.a, DiskImages) and isinstance(streamed.b, DiskImages)
    assert isinstance(memory, torch.Tensor)
    assert got["streamed"][1:] == got["memory"][1:]
