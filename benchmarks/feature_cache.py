"""Linear-probe trials with and without the head-only feature cache, side by side.

Run: .venv/bin/python benchmarks/feature_cache.py
Writes the section "Head-only feature cache" of docs/benchmarks.md. The data are the
quickstart's target task (digits 5-9, 15 labelled images per class, 60 validation images per
class) at two image sizes; each variant trains the same plan for 8 epochs.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402


def main() -> None:
    from autofreeze.cache.activations import FeatureCache
    from autofreeze.core.freezing import FreezePlan
    from autofreeze.core.train import TrainConfig, fit
    from autofreeze.data.images import to_tensors
    from autofreeze.plugins.registry import Registry
    from autofreeze.schedules import Static

    registry = Registry()
    data = registry.create_dataset(
        "digits", classes=[5, 6, 7, 8, 9], train_per_class=15, val_per_class=60
    )
    rows = []
    for name, size in (("resnet10t", 32), ("resnet10t", 96), ("convnext_atto", 64)):
        probe = registry.create_backbone(name, num_classes=5)
        kw = {"mean": probe.data_config["mean"], "std": probe.data_config["std"], "size": size}
        train, val = to_tensors(data.train, **kw), to_tensors(data.val, **kw)
        cfg = TrainConfig(epochs=8, batch_size=25)
        times = {}
        accs = {}
        cache = FeatureCache()
        for variant in ("full forward", "cache, first trial", "cache, next trials"):
            torch.manual_seed(0)
            bb = registry.create_backbone(name, num_classes=5)
            plan = FreezePlan(boundary=bb.n_blocks, head_lr=1e-2)
            sched = Static(boundary=plan.boundary, n_blocks=bb.n_blocks, epochs=8)
            t0 = time.perf_counter()
            features = None if variant == "full forward" else cache.get(bb, plan, (), train, val)
            result = fit(bb, plan, sched, train, val, cfg, features=features)
            times[variant] = time.perf_counter() - t0
            accs[variant] = result.final.val_accuracy
        base = times["full forward"]
        for variant, seconds in times.items():
            rows.append((f"{name} @ {size} px", variant, seconds, base / seconds, accs[variant]))
            print(rows[-1], flush=True)
    lines = [
        f"`.venv/bin/python benchmarks/feature_cache.py` on {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} (CPU), Python "
        f"{platform.python_version()}. One linear-probe trial (boundary = n_blocks, static, "
        "8 epochs, 75 training and 300 validation images of the quickstart's digits 5-9). "
        "'first trial' includes computing the features; later head-only trials of the same "
        "study reuse them. Backbones are randomly initialised (the timing does not depend on "
        "the weights); equal accuracies show that both paths train the same classifier.",
        "",
        "| backbone | variant | seconds per trial | speed-up | val_accuracy |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {b} | {v} | {s:.3f} | {r:.1f}x | {a:.4f} |" for b, v, s, r, a in rows]
    write_section("Head-only feature cache", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
