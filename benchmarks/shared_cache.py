"""Two workers on one machine sharing the on-disk prefix cache vs each computing its own.

Run: .venv/bin/python benchmarks/shared_cache.py [--images 1024] [--epochs 2]
Writes docs/benchmarks.md (section "Shared prefix cache"). Two processes start together (a
file barrier), each builds resnet18 at 64 px, gets the prefix outputs of the same plan
(boundary n/2) and trains the suffix; "shared" gives them one cache folder, "own" one each.
One thread per process, as `search --workers 2` gives on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKER = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from autofreeze.cache.activations import PrefixCache, prefix_features
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry
from autofreeze.schedules import Static
from autofreeze.testing import tiny_split
from autofreeze.core.train import TrainConfig, Trainer
folder, barrier = Path(sys.argv[1]), Path(sys.argv[2])
images, epochs = int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
backbone = Registry().create_backbone("resnet18", num_classes=10)
k = backbone.n_blocks // 2
plan = FreezePlan(boundary=k, head_lr=3e-3, backbone_lr_ratio=0.3)
train = tiny_split(images, num_classes=10, size=64)
val = tiny_split(images // 4, num_classes=10, size=64, seed=1)
(barrier / f"ready-{sys.argv[5]}").touch()
while not (barrier / "go").exists():
    time.sleep(0.002)
t0 = time.perf_counter()
cache = PrefixCache(folder)
got = prefix_features(backbone, plan, train, val, cache, weights="none", seed=0, device="cpu")
prefix_s = time.perf_counter() - t0
trainer = Trainer(backbone, plan, Static(boundary=k, n_blocks=backbone.n_blocks, epochs=epochs),
                  TrainConfig(epochs=epochs, batch_size=32))
trainer.use_prefix(got.split)
result = trainer.fit(got.train, got.val)
print(json.dumps({"prefix_s": prefix_s, "total_s": time.perf_counter() - t0,
                  "computed": cache.misses, "read": cache.disk_hits,
                  "accuracy": result.final.val_accuracy}))
"""


def run(shared: bool, images: int, epochs: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folders = [tmp_path / "cache"] * 2 if shared else [tmp_path / "a", tmp_path / "b"]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(f), tmp, str(images), str(epochs), str(i)],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            for i, f in enumerate(folders)
        ]
        while len(list(tmp_path.glob("ready-*"))) < 2:
            time.sleep(0.05)
        (tmp_path / "go").touch()
        return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    results = {}
    for mode in ("own", "shared", "own", "shared"):  # alternating, the second pair is reported
        results[mode] = run(mode == "shared", args.images, args.epochs)
        print(mode, results[mode], file=sys.stderr, flush=True)
    own, shared = results["own"], results["shared"]

    def cell(rs: list[dict], key: str) -> str:
        return " / ".join(f"{r[key]:.1f}" for r in rs)

    wall = {m: max(r["total_s"] for r in rs) for m, rs in results.items()}
    prefix = {m: sum(r["prefix_s"] for r in rs) for m, rs in results.items()}
    from benchmarks._report import write_section

    body = f"""
`.venv/bin/python benchmarks/shared_cache.py --images {args.images} --epochs {args.epochs}` on
{platform.machine()}, {os.cpu_count()} cores (CPU). Two processes, one thread each, started
together: resnet18 at 64 px, boundary n/2, {args.images} training images, {args.epochs} epochs of
the suffix. With one shared cache folder one process computes the prefix and the other waits
for its file and reads it (memory-mapped); with a folder each both compute it.

| cache | prefix s (each) | wall s (each) | computed / read | accuracy |
| --- | --- | --- | --- | --- |
| own folders | {cell(own, "prefix_s")} | {cell(own, "total_s")} | {sum(r["computed"] for r in own)} / {sum(r["read"] for r in own)} | {own[0]["accuracy"]:.4f} / {own[1]["accuracy"]:.4f} |
| shared folder | {cell(shared, "prefix_s")} | {cell(shared, "total_s")} | {sum(r["computed"] for r in shared)} / {sum(r["read"] for r in shared)} | {shared[0]["accuracy"]:.4f} / {shared[1]["accuracy"]:.4f} |

Prefix work of both processes: {prefix["own"]:.1f} s with their own folders, {prefix["shared"]:.1f}
s shared (the reader's share is its wait); the pair finished in {wall["own"]:.1f} s and
{wall["shared"]:.1f} s (**{wall["own"] / wall["shared"]:.2f}x**).
"""  # noqa: E501
    write_section("Shared prefix cache", body)
    print(body)


if __name__ == "__main__":
    main()
