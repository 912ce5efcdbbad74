"""Data at scale: prefix outputs above the cache's memory bound kept as float16 rows on disk
(against the float32 cache in memory and against training uncached, what a trial whose prefix
was refused ran before), and ``train --on train+val`` on streamed splits joined as a view
(against joining them in memory, the code before this change).

Run: .venv/bin/python benchmarks/prefix_store.py [--images 20000] [--size 224] [--boundary 3]
[--train-batches 30] [--folder DIR]
Writes docs/benchmarks.md (section "Data at scale: prefix rows on disk, train+val streamed") and
benchmarks/results/prefix_store.json (``--from-json`` writes the section again from it). The
images are benchmarks/data.py's (``--folder`` reuses them): the first 80 % are the train split,
the rest the val split, each decoded once (``decode_split``, 2 processes) into a temporary
store removed at the end. Each worker runs in a process of its own (peak RSS is per process),
streams its images from the decoded files, and trains resnet10t (random weights, static plan at
``--boundary``, AdamW, batch 32) for ``--train-batches`` batches; the time of a whole epoch is
that rate over the split (estimated, said so). Then a small real case: scikit-learn's digits
trained to the end on the float32 cache and on the disk rows (float16, bfloat16).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data import (  # noqa: E402
    BATCH,
    CLASSES,
    MB,
    MEAN,
    STD,
    PeakRss,
    image_folder,
    listing,
    machine,
    say,
)

RESULTS = ROOT / "benchmarks" / "results" / "prefix_store.json"
TITLE = "Data at scale: prefix rows on disk, train+val streamed"
MODES = {
    "uncached": "uncached (the prefix refused: before this change)",
    "rows": "prefix rows on disk, float16: computed",
    "rows-again": "prefix rows on disk, float16: read by a second worker",
    "memory": "prefix in memory, float32 (memory bound lifted)",
    "join-memory": "train+val joined in memory (before this change)",
    "join-stream": "train+val joined as a view (streamed)",
}


def splits(args: argparse.Namespace, store: Path, memory_bytes: int = 1):
    """The train and val splits (80 / 20 % of the folder) through ``decode_split``."""
    from autofreeze.data.decode import Decoding, decode_split
    from autofreeze.data.images import ImageSet

    images = listing(Path(args.folder))
    cut = len(images) * 4 // 5
    parts = (
        ImageSet(images.images[:cut], images.labels[:cut]),
        ImageSet(images.images[cut:], images.labels[cut:]),
    )
    said: list[str] = []
    decoding = Decoding(folder=store, memory_bytes=memory_bytes, workers=2, progress=said.append)
    got = [
        decode_split(p, mean=MEAN, std=STD, size=args.size, decoding=decoding, label=label)
        for p, label in zip(parts, ("train", "val"), strict=True)
    ]
    return got[0], got[1], said


def head(split, k: int):
    """The first ``k`` rows of a split, where they are (a file stays a file)."""
    from autofreeze.data.tensors import JoinedRows, RowFile, TensorSplit

    x = split.x
    k = min(k, len(split))
    if isinstance(x, RowFile):
        x = RowFile(x.path, (k * split.views, *x.shape[1:]), x.dtype, x.key, x.offset, x.crc)
    elif isinstance(x, JoinedRows):
        raise TypeError("take the head of each part")
    else:
        x = x[:k]
    return TensorSplit(x, split.y[:k], split.views, split.mean, split.std)


def old_cat(a, b):
    """``cat`` before this change: both splits read into memory and joined."""
    import torch

    from autofreeze.data.tensors import TensorSplit

    x = torch.cat([a.rows(slice(None)), b.rows(slice(None))])
    return TensorSplit(x, torch.cat([a.y, b.y]), 1, a.mean, a.std)


def cached(mode, args, backbone, plan, train, val, out: dict) -> tuple:
    """The prefix's outputs from the cache (rows on disk, or float32 in memory): the split,
    the rows to train and validate on, the rows of an epoch; figures into ``out``."""
    from autofreeze.cache.activations import PrefixCache, prefix_features

    folder = None if mode == "memory" else Path(args.prefix)
    bound = 2**62 if mode == "memory" else args.memory_bound
    cache = PrefixCache(folder, **({"memory_bytes": bound} if bound else {}))
    out["memory_bound_gib"] = cache.memory_bytes / 2**30
    got = prefix_features(backbone, plan, train, val, cache, weights="none", seed=0, device="cpu")
    out["source"], out["prefix_on_disk"] = got.source, got.train.on_disk
    out["entry_bytes"] = got.train.nbytes + got.val.nbytes
    out["disk_bytes"] = sum(p.stat().st_size for p in Path(args.prefix).glob("*.rows*"))
    out["row_dtype"] = str(got.train.x.dtype).removeprefix("torch.")
    n_train = args.train_batches * BATCH
    return got.split, head(got.train, n_train), head(got.val, BATCH), len(train)


def joined(mode, n_train, train, val, out: dict, rss, t0: float) -> tuple:
    """Train and val joined (in memory, or as a view), every row of the join read once in
    random batches (an epoch's reads); the same rows to train on either way (the first
    half-batches of train and of val) and a batch to validate on."""
    import torch

    from autofreeze.data.tensors import TensorSplit, cat

    both = (old_cat if mode == "join-memory" else cat)(train, val)
    out["joined_type"] = type(both.x).__name__
    out["join_s"] = time.perf_counter() - t0
    out["rss_joined_mb"] = rss.now() / MB
    t1, checksum = time.perf_counter(), 0.0
    order = torch.randperm(len(both), generator=torch.Generator().manual_seed(1))
    for idx in order.split(BATCH):
        checksum += float(both.batch(idx)[:, :, ::8, ::8].sum(dtype=torch.float64))
    out["pass_images_per_s"] = len(both) / (time.perf_counter() - t1)
    out["checksum"] = checksum
    half = n_train // 2
    if mode == "join-memory":
        rows = torch.cat([torch.arange(half), len(train) + torch.arange(half)])
        return TensorSplit(both.x[rows], both.y[rows], 1, MEAN, STD), head(val, BATCH)
    return cat(head(train, half), head(val, half)), head(val, BATCH)


def worker(mode: str, args: argparse.Namespace) -> dict:
    rss = PeakRss()
    import torch

    from autofreeze.core.train import TrainConfig, Trainer
    from autofreeze.plan import FreezePlan
    from autofreeze.plugins.registry import Registry
    from autofreeze.schedules import Static

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    train, val, said = splits(args, Path(args.store))
    assert train.on_disk and val.on_disk and not any("decoding" in s for s in said), said
    rss_loaded = rss.now()
    torch.manual_seed(0)
    backbone = Registry().create_backbone("resnet10t", num_classes=CLASSES)
    k = args.boundary
    plan = FreezePlan(boundary=k, head_lr=1e-3, backbone_lr_ratio=0.1)
    n_train = args.train_batches * BATCH
    out: dict[str, Any] = {"mode": mode, "train_rows": len(train), "val_rows": len(val)}
    if mode in ("rows", "rows-again", "memory"):
        use, fit_train, fit_val, epoch_rows = cached(mode, args, backbone, plan, train, val, out)
    elif mode.startswith("join"):
        use, epoch_rows = None, len(train) + len(val)
        fit_train, fit_val = joined(mode, n_train, train, val, out, rss, t0)
    else:
        use, fit_train, fit_val = None, head(train, n_train), head(val, BATCH)
        epoch_rows = len(train)
    out["prefix_s"] = time.perf_counter() - t0
    out["peak_prefix_mb"] = rss.phase() / MB
    schedule = Static(boundary=k, n_blocks=backbone.n_blocks, epochs=1)
    cfg = TrainConfig(epochs=1, batch_size=BATCH, seed=0)
    trainer = Trainer(backbone, plan, schedule, cfg)
    if use is not None:
        trainer.use_prefix(use)
    result = trainer.fit(fit_train, fit_val)
    out["peak_fit_mb"] = rss.stop() / MB
    rate = result.cost["train_examples_per_second"]
    out |= {
        "rss_loaded_mb": rss_loaded / MB,
        "peak_rss_mb": max(out["peak_prefix_mb"], out["peak_fit_mb"]),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB,
        "train_images": len(fit_train),
        "train_images_per_s": rate,
        "epoch_rows": epoch_rows,
        "epoch_s_estimated": epoch_rows / rate,
        "train_loss": result.final.train_loss,
        "val_loss": result.final.val_loss,
        "blocks": backbone.n_blocks,
    }
    return out


def in_subprocess(mode: str, args: argparse.Namespace, store: Path, prefix: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", mode, "--folder", str(args.folder)]
    cmd += ["--store", str(store), "--prefix", str(prefix), "--size", str(args.size)]
    cmd += ["--boundary", str(args.boundary), "--train-batches", str(args.train_batches)]
    if args.memory_bound:
        cmd += ["--memory-bound", str(args.memory_bound)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"worker {mode} failed:\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    say(
        f"{mode}: prefix/join {got['prefix_s']:.0f} s, peak RSS {got['peak_rss_mb']:.0f} MB, "
        f"training {got['train_images_per_s']:.1f} images/s, loss {got['train_loss']!r}"
    )
    return got


# -- the small real case: digits, trained to the end ------------------------------------------
def digits_accuracy(epochs: int = 4) -> list[dict]:
    """scikit-learn's digits at 32 px (1437 train, 360 val), resnet10t from random weights at
    boundary 2, the prefix cached as float32 in memory and as rows on disk in float16 and
    bfloat16: final validation accuracy and loss of each."""
    import numpy as np
    import torch

    from autofreeze.cache.activations import PrefixCache, prefix_features
    from autofreeze.core.train import TrainConfig, Trainer
    from autofreeze.data.images import ImageSet, to_tensors
    from autofreeze.plan import FreezePlan
    from autofreeze.plugins.registry import Registry
    from autofreeze.schedules import Static

    data = Registry().create_dataset("digits")
    train = to_tensors(data.train, mean=MEAN, std=STD, size=32)
    val = to_tensors(data.val, mean=MEAN, std=STD, size=32)
    assert isinstance(data.train, ImageSet) and np is not None
    out = []
    folder = Path(tempfile.mkdtemp(prefix="autofreeze-digits-rows-"))
    try:
        for name, dtype, bound in (
            ("float32, in memory", "float32", 2**62),
            ("float16 rows on disk", "float32", 1024),
            ("bfloat16 rows on disk", "bfloat16", 1024),
        ):
            torch.manual_seed(0)
            backbone = Registry().create_backbone("resnet10t", num_classes=data.num_classes)
            plan = FreezePlan(boundary=2, head_lr=3e-3, backbone_lr_ratio=0.3)
            cache = PrefixCache(folder, memory_bytes=bound)
            got = prefix_features(
                backbone, plan, train, val, cache, weights="none", seed=0, device="cpu", dtype=dtype
            )
            schedule = Static(boundary=2, n_blocks=backbone.n_blocks, epochs=epochs)
            trainer = Trainer(backbone, plan, schedule, TrainConfig(epochs=epochs, batch_size=32))
            trainer.use_prefix(got.split)
            final = trainer.fit(got.train, got.val).final
            out.append(
                {
                    "name": name,
                    "on_disk": got.train.on_disk,
                    "val_accuracy": final.val_accuracy,
                    "val_loss": final.val_loss,
                    "train_loss": final.train_loss,
                }
            )
            say(f"digits, {name}: val_accuracy {final.val_accuracy:.4f}, loss {final.val_loss:.4f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--boundary", type=int, default=3)
    parser.add_argument("--train-batches", type=int, default=30)
    parser.add_argument("--folder", help="image folder to reuse or fill (default: a new temp dir)")
    parser.add_argument(
        "--memory-bound",
        type=int,
        help="the disk rows' workers' memory bound in bytes (default: the cache's, a quarter "
        "of the RAM available)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--from-json", action="store_true", help="only write the section again")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(worker(args.one, args)))
        return
    if args.from_json:
        return write_report(json.loads(RESULTS.read_text()))
    wall0 = time.perf_counter()
    root, images, jpeg_bytes, gen_s = image_folder(args)
    tmp = Path(tempfile.mkdtemp(prefix="autofreeze-prefix-store-"))
    store, prefix = tmp / "images", tmp / "prefix"
    try:
        t0 = time.perf_counter()
        train, val, _ = splits(args, store)
        decode_s = time.perf_counter() - t0
        u8_bytes = sum(p.stat().st_size for p in store.glob("*.u8"))
        say(f"decoded {len(train)} + {len(val)} images in {decode_s:.0f} s")
        del train, val
        runs = [in_subprocess(m, args, store, prefix) for m in MODES]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    digits = digits_accuracy()
    results = {
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("one", "store", "prefix")},
        "images": len(images),
        "jpeg_bytes": jpeg_bytes,
        "u8_bytes": u8_bytes,
        "generate_s": gen_s,
        "decode_s": decode_s,
        "runs": runs,
        "digits": digits,
        "wall_s": time.perf_counter() - wall0,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    write_report(results)
    say(f"image folder kept: {root} (reuse with --folder {root})")


def write_report(res: dict) -> None:
    n, info, a, runs = res["images"], res["machine"], res["args"], res["runs"]
    by = {r["mode"]: r for r in runs}
    unc, rows, again, mem = by["uncached"], by["rows"], by["rows-again"], by["memory"]
    jm, js = by["join-memory"], by["join-stream"]
    n_train, n_val = rows["train_rows"], rows["val_rows"]
    k, blocks = a["boundary"], rows["blocks"]

    def prefix_row(r: dict) -> str:
        made = {"computed": "computed", "disk": "read", "memory": "computed"}[r["source"]]
        disk = f"{r['disk_bytes'] / MB:.0f}" if r["prefix_on_disk"] else "0"
        return (
            f"| {MODES[r['mode']]} | {made} {r['prefix_s']:.0f} s | {r['entry_bytes'] / MB:.0f} "
            f"| {disk} | {r['peak_prefix_mb']:.0f} | {r['peak_fit_mb']:.0f} | "
            f"**{r['peak_rss_mb']:.0f}** | {r['train_images_per_s']:.1f} | "
            f"{r['epoch_s_estimated']:.0f} | {r['train_loss']:.6f} |"
        )

    def join_row(r: dict) -> str:
        return (
            f"| {MODES[r['mode']]} | `{r['joined_type']}` | {r['join_s']:.1f} | "
            f"{r['rss_joined_mb']:.0f} | {r['peak_prefix_mb']:.0f} | {r['peak_fit_mb']:.0f} | "
            f"**{r['peak_rss_mb']:.0f}** | {r['pass_images_per_s']:.0f} | "
            f"{r['train_images_per_s']:.1f} | {r['epoch_s_estimated']:.0f} |"
        )

    unc_row = (
        f"| {MODES['uncached']} | - | - | 0 | {unc['peak_prefix_mb']:.0f} | "
        f"{unc['peak_fit_mb']:.0f} | **{unc['peak_rss_mb']:.0f}** | "
        f"{unc['train_images_per_s']:.1f} | {unc['epoch_s_estimated']:.0f} | "
        f"{unc['train_loss']:.6f} |"
    )
    cmd = f"`.venv/bin/python benchmarks/prefix_store.py --images {n} --size {a['size']} "
    cmd += f"--boundary {k} --train-batches {a['train_batches']}"
    cmd += f" --memory-bound {a['memory_bound']}`" if a.get("memory_bound") else "`"
    speed = rows["train_images_per_s"] / unc["train_images_per_s"]
    speed_again = again["train_images_per_s"] / unc["train_images_per_s"]
    vs_mem = again["train_images_per_s"] / mem["train_images_per_s"]
    d = {r["name"]: r for r in res["digits"]}
    f32, f16, bf16 = (
        d[x] for x in ("float32, in memory", "float16 rows on disk", "bfloat16 rows on disk")
    )
    bound_said = (
        "set by `--memory-bound`, below the default on this machine for this dataset size"
        if a.get("memory_bound")
        else "a quarter of the RAM available: the default"
    )
    saved = unc["epoch_s_estimated"] - again["epoch_s_estimated"]
    payback = (
        f"the prefix's computation ({rows['prefix_s']:.0f} s, once for every trial of the study "
        f"at this boundary) is paid back after {rows['prefix_s'] / saved:.1f} epochs of one trial."
        if saved > 0
        else "training on the rows is slower than uncached here: the cache does not pay."
    )
    same_join = jm["checksum"] == js["checksum"] and jm["train_loss"] == js["train_loss"]
    note = f"\n\n**Caveat.** {res['note']}\n" if res.get("note") else ""
    body = f"""
{cmd} under `flock /tmp/autofreeze-cpu.lock` on {info["platform"]}, {info["cores"]} cores,
{info["ram_gib"]:.0f} GiB RAM, no GPU, torch {info["torch"]}, Python {info["python"]};
{res["wall_s"] / 60:.1f} min in all. Dataset: benchmarks/data.py's {n} JPEGs (256 px, 10
classes), the first {n_train} the train split and the last {n_val} the val split, each decoded
once at {a["size"]} px (`decode_split`, 2 processes, {res["decode_s"]:.0f} s) into a uint8 file
({res["u8_bytes"] / MB:.0f} MB for both) that every worker streams (`data_memory` below the
splits). Each worker is a process of its own; resnet10t from random weights, static plan at
boundary {k} of {blocks}, AdamW, batch {BATCH}, trained for {a["train_batches"]} batches
({rows["train_images"]} images) and validated on one batch; "epoch s" is the split over that
rate (estimated from those batches, not a whole epoch measured). RSS in MB (10^6 bytes),
sampled every 5 ms: the peak while the prefix is computed or read (or the splits joined) and
the peak while training.{note}

**Prefix outputs above the memory bound.** At boundary {k} the prefix's output is
{rows["entry_bytes"] / (n_train + n_val) / 1e3:.0f} kB an image in float16: {mem["entry_bytes"] / MB:.0f}
MB in float32 for the two splits, above the cache's memory bound on this machine
({rows["memory_bound_gib"]:.1f} GiB, {bound_said}), so before this change the
trial was refused its cache and trained uncached. Now it is written as float16 rows to the
cache folder as it is computed and read by the rows of each batch; a second worker reads the
file. The float32 row lifts the memory bound to show the in-memory cache it would have needed.

| worker | prefix | entry MB | disk MB | peak: prefix | peak: training | peak | training images/s | epoch s | training loss |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{unc_row}
{prefix_row(rows)}
{prefix_row(again)}
{prefix_row(mem)}

- Training on the disk rows against uncached: **{speed:.2f}x** the images/s where the worker computed
  them, **{speed_again:.2f}x** where it read them ({unc["train_images_per_s"]:.1f} against
  {rows["train_images_per_s"]:.1f} and {again["train_images_per_s"]:.1f} images/s); {payback}
- Against the float32 cache in memory: {vs_mem:.2f}x its training images/s, at a peak of
  {again["peak_rss_mb"]:.0f} MB against {mem["peak_rss_mb"]:.0f} MB; disk: {rows["disk_bytes"] / MB:.0f} MB (float16 rows and their checksums).
- Losses after the same batches: uncached {unc["train_loss"]:.6f}, float32 cache {mem["train_loss"]:.6f},
  float16 rows {rows["train_loss"]:.6f} (computed) and {again["train_loss"]:.6f} (read).

**The accuracy of 16 bits, a small real case.** scikit-learn's digits (1437 train, 360 val
images at 32 px), resnet10t from random weights at boundary 2, 4 epochs, batch 32, the prefix
cached as float32 in memory and as rows on disk:

| prefix cached as | val accuracy | val loss | training loss |
| --- | --- | --- | --- |
| {f32["name"]} | {f32["val_accuracy"]:.4f} | {f32["val_loss"]:.4f} | {f32["train_loss"]:.4f} |
| {f16["name"]} | {f16["val_accuracy"]:.4f} | {f16["val_loss"]:.4f} | {f16["train_loss"]:.4f} |
| {bf16["name"]} | {bf16["val_accuracy"]:.4f} | {bf16["val_loss"]:.4f} | {bf16["train_loss"]:.4f} |

**train+val on streamed splits.** `train --on train+val` joins the two splits: before this
change in memory (both read, then copied into one tensor), now as a view that reads each
batch's rows from the split they are in. Each worker joins them, reads every row of the join
once in random batches ("read pass"), then trains on the same {rows["train_images"]} rows
(the first of train and of val) either way.

| worker | join | join s | RSS joined | peak: join and read pass | peak: training | peak | read pass images/s | training images/s | epoch s |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{join_row(jm)}
{join_row(js)}

- Peak RSS of the streamed join: **{js["peak_rss_mb"]:.0f} MB** against {jm["peak_rss_mb"]:.0f} MB
  ({js["peak_rss_mb"] / jm["peak_rss_mb"]:.2f}x); training {js["train_images_per_s"] / jm["train_images_per_s"]:.2f}x
  the images/s, the read pass {js["pass_images_per_s"] / jm["pass_images_per_s"]:.2f}x. The read passes' checksums and the training
  losses are {"equal" if same_join else "NOT equal"} (the same rows either way).
"""  # noqa: E501
    from benchmarks._report import write_section

    write_section(TITLE, body)
    print(body)


if __name__ == "__main__":
    main()
