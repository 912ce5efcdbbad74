"""The frozen-prefix cache vs no cache: epoch time after the first, accuracy and peak memory at
head-only (pooled features), at boundary n-1 and at n/2, for resnet18 at 64 px and ViT-tiny.

Run: .venv/bin/python benchmarks/prefix_cache.py [--epochs 4] [--train 256] [--val 128]
Writes docs/benchmarks.md (section "Frozen-prefix cache"). Each measurement runs in a process
of its own (peak RSS is per process), cached and uncached alternating, on the same data, plan
and seed; the backbones are randomly initialised (timing and equality do not depend on the
weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = [("resnet18", 64), ("vit_tiny_patch16_224", 224)]
MODELS_SIZE = dict(MODELS)


def measure(
    name: str, size: int, where: str, cached: bool, args: argparse.Namespace, dtype: str = "float32"
) -> dict:
    """One fit in this process: per-epoch seconds, final accuracy, peak RSS."""
    import torch

    from autofreeze.cache.activations import FeatureCache, PrefixCache, prefix_features
    from autofreeze.core.train import TrainConfig, Trainer
    from autofreeze.plan import FreezePlan
    from autofreeze.plugins.registry import Registry
    from autofreeze.schedules import Static
    from autofreeze.testing import tiny_split

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    backbone = Registry().create_backbone(name, num_classes=10)
    n = backbone.n_blocks
    k = {"head": n, "n-1": n - 1, "n/2": n // 2}[where]
    plan = FreezePlan(boundary=k, head_lr=3e-3, backbone_lr_ratio=0.3)
    train = tiny_split(args.train, num_classes=10, size=size)
    val = tiny_split(args.val, num_classes=10, size=size, seed=1)
    cfg = TrainConfig(epochs=args.epochs, batch_size=32, feature_cache=cached)
    trainer = Trainer(backbone, plan, Static(boundary=k, n_blocks=n, epochs=args.epochs), cfg)
    t0 = time.perf_counter()
    if cached and k == n:
        train, val = FeatureCache().get(backbone, plan, (), train, val)
        trainer.use_features(backbone.model.get_classifier())
    elif cached:
        features = prefix_features(
            backbone,
            plan,
            train,
            val,
            PrefixCache(),
            weights="none",
            seed=0,
            device="cpu",
            dtype=dtype,
        )
        trainer.use_prefix(features.split)
        train, val = features.train, features.val
    setup = time.perf_counter() - t0
    epochs: list[float] = []
    last = [time.perf_counter()]

    def tick(_result) -> None:
        now = time.perf_counter()
        epochs.append(now - last[0])
        last[0] = now

    result = trainer.fit(train, val, tick)
    frozen = frozen_forward_seconds(backbone, k, args) if cached else None
    return {
        "frozen_forward": frozen,
        "blocks": n,
        "boundary": k,
        "setup": setup,
        "first_epoch": setup + epochs[0],
        "later_epoch": sum(epochs[1:]) / max(1, len(epochs) - 1),
        "accuracy": result.final.val_accuracy,
        "val_loss": result.final.val_loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def frozen_forward_seconds(backbone, k: int, args: argparse.Namespace) -> float:
    """The work the cache removes from an epoch: blocks 0..k-1 in eval mode, no autograd, over
    the training and validation images once (pooled features at head-only), median of 3."""
    import statistics

    import torch

    from autofreeze.core.split import prefix_outputs, split_at
    from autofreeze.testing import tiny_split

    size = MODELS_SIZE[backbone.name]
    images = tiny_split(args.train + args.val, num_classes=10, size=size).x
    model = backbone.model.eval()
    split = None if k == backbone.n_blocks else split_at(backbone, k)
    times = []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, len(images), 32):  # the training batch size
                x = images[i : i + 32]
                _ = model.forward_features(x) if split is None else prefix_outputs(split, x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_subprocess(name: str, size: int, where: str, cached: bool, args, dtype="float32") -> dict:
    sizes = ["--epochs", str(args.epochs), "--train", str(args.train), "--val", str(args.val)]
    cmd = [sys.executable, __file__, "--one", name, str(size), where, str(int(cached))]
    cmd += [*sizes, "--dtype", dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bound(row: dict) -> str:
    """Uncached epoch / (uncached epoch - frozen forward): what removing that work can give."""
    plain, frozen = row["plain"]["later_epoch"], row["cached"]["frozen_forward"]
    if frozen is None or frozen >= plain:
        return "-"
    return f"{plain / (plain - frozen):.1f}x"


def bound_uniform(args: argparse.Namespace) -> float:
    """The bound at n/2 for blocks of equal cost (forward 1, backward 2 per unit of forward)."""
    epoch = 2.0 * args.train + 1.0 * args.val
    return epoch / (epoch - 0.5 * (args.train + args.val))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--val", type=int, default=128)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--dtypes-only", action="store_true", help="only the storage dtype rows")
    args = parser.parse_args()
    if args.one:
        name, size, where, cached = args.one
        print(json.dumps(measure(name, int(size), where, cached == "1", args, args.dtype)))
        return
    if args.dtypes_only:
        return dtypes(args)
    rows = []
    for name, size in MODELS:
        for where in ("head", "n-1", "n/2"):
            plain = in_subprocess(name, size, where, False, args)
            cached = in_subprocess(name, size, where, True, args)
            row = {"model": name, "size": size, "where": where, "plain": plain, "cached": cached}
            rows.append(row)
            print(
                f"{name} {where} (k={plain['boundary']}/{plain['blocks']}): later epoch "
                f"{plain['later_epoch']:.2f}s -> {cached['later_epoch']:.3f}s "
                f"({plain['later_epoch'] / cached['later_epoch']:.1f}x), accuracy "
                f"{plain['accuracy']:.4f} / {cached['accuracy']:.4f}",
                file=sys.stderr,
                flush=True,
            )
    out = ROOT / "benchmarks" / "results" / "prefix_cache.json"
    out.write_text(json.dumps(rows, indent=1))
    table = "\n".join(
        f"| {r['model']} {r['size']} px | {r['where']} (k={r['plain']['boundary']} of "
        f"{r['plain']['blocks']}) | {r['plain']['later_epoch']:.2f} | "
        f"{r['cached']['later_epoch']:.3f} | "
        f"**{r['plain']['later_epoch'] / r['cached']['later_epoch']:.1f}x** | "
        f"{bound(r)} | "
        f"{r['plain']['first_epoch'] / r['cached']['first_epoch']:.2f}x | "
        f"{r['plain']['accuracy']:.4f} / {r['cached']['accuracy']:.4f} | "
        f"{r['plain']['peak_rss_mb']:.0f} / {r['cached']['peak_rss_mb']:.0f} |"
        for r in rows
    )
    import torch

    from benchmarks._report import write_section

    body = f"""
`.venv/bin/python benchmarks/prefix_cache.py --epochs {args.epochs} --train {args.train} --val
{args.val}` on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (CPU).
One static plan per row (AdamW, batch 32, {args.train} training and {args.val} validation
images of 10 classes, random weights), trained with and without the cache in processes of
their own, one after the other. "Later epoch" is the mean wall time of epochs
2..{args.epochs} (training and validation); accuracy and peak RSS are given as no cache /
cache. The first epoch of a cached run includes computing the prefix (a later trial of the
study, or another worker, reads it instead). Goals of issue 10: head-only >= 20x, n-1 >= 3x,
n/2 >= 1.5x per later epoch, equal accuracy.

"Bound" is the most any cache of these blocks can give: the uncached epoch over the uncached
epoch minus the frozen blocks' own forward time (eval mode, no autograd, over the training and
validation images, measured in the cached run's process). Frozen blocks run no backward pass
even uncached: at n/2 of a network whose blocks cost alike, a training image costs a forward 1
and a backward of the trained half 1, of which the cache removes 0.5, and a validation image 1,
of which it removes 0.5: with {args.train} training and {args.val} validation images a bound
of {bound_uniform(args):.2f}x, below the goal of 1.5x.

| model | boundary | later epoch s | cached | ratio | bound | 1st epoch | accuracy | peak RSS MB |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{table}
"""
    write_section("Frozen-prefix cache", body)
    print(table)


def dtypes(args: argparse.Namespace) -> None:
    """Cached prefix outputs stored in 16 bits: accuracy and loss vs float32 storage."""
    import torch

    from benchmarks._report import write_section

    lines = []
    for name, size in MODELS:
        for where in ("n-1", "n/2"):
            got = {
                d: in_subprocess(name, size, where, True, args, d)
                for d in ("float32", "float16", "bfloat16")
            }
            base = got["float32"]
            cells = " | ".join(
                f"{got[d]['accuracy']:.4f} ({got[d]['val_loss'] - base['val_loss']:+.4f})"
                for d in ("float32", "float16", "bfloat16")
            )
            lines.append(f"| {name} {size} px | {where} (k={base['boundary']}) | {cells} |")
            print(lines[-1], file=sys.stderr, flush=True)
    body = f"""
`.venv/bin/python benchmarks/prefix_cache.py --dtypes-only --epochs {args.epochs} --train
{args.train} --val {args.val}` on {platform.machine()}, {os.cpu_count()} cores, torch
{torch.__version__} (CPU). The same cached runs as in "Frozen-prefix cache", with the prefix
outputs stored as `[training] cache_dtype` (half the memory and disk in 16 bits; the suffix
computes in float32). Each cell: final validation accuracy (validation loss minus the float32
run's).

| model | boundary | float32 | float16 | bfloat16 |
| --- | --- | --- | --- | --- |
{chr(10).join(lines)}
"""
    write_section("Prefix cache storage dtype", body)
    print(body)


if __name__ == "__main__":
    main()
