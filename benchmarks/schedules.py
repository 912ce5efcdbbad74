"""FreezeOut and AutoFreeze vs static full fine-tuning: training time and accuracy on the
quickstart task (resnet10t pretrained on digits 0-4, fine-tuned on 75 images of digits 5-9).

Run: .venv/bin/python benchmarks/schedules.py [--seeds 3] [--epochs 8]
Writes docs/benchmarks.md (section "Progressive-freezing schedules"). Every schedule trains the
same plan (boundary 0, head LR 3e-3, backbone ratio 0.3, layer decay 0.8, AdamW) with its
default knobs, on the same seeds, one after the other; with and without caching the blocks
the schedule freezes. Accuracy is on the 300 validation images.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autofreeze.cache.activations import refreezer  # noqa: E402
from autofreeze.config import load_config  # noqa: E402
from autofreeze.core.train import fit  # noqa: E402
from autofreeze.plan import FreezePlan  # noqa: E402
from autofreeze.progress import quiet  # noqa: E402
from autofreeze.runs.prepare import prepare  # noqa: E402
from autofreeze.runs.pretrain import ensure_weights  # noqa: E402
from benchmarks._report import write_section  # noqa: E402

# (label, schedule, frozen blocks cached from the epoch they freeze)
VARIANTS = (
    ("static", "static", False),
    ("freezeout", "freezeout", False),
    ("freezeout + cache", "freezeout", True),
    ("autofreeze", "autofreeze", False),
    ("autofreeze + cache", "autofreeze", True),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    cfg = load_config(ROOT / "studies" / "quickstart.toml", {"training.epochs": args.epochs})
    ensure_weights(cfg, quiet)
    prepared = prepare(cfg)
    results: dict[str, list[tuple[float, float, int]]] = {v[0]: [] for v in VARIANTS}
    for seed in range(args.seeds):
        for label, name, cached in VARIANTS:
            plan = FreezePlan(
                boundary=0, schedule=name, head_lr=3e-3, backbone_lr_ratio=0.3, layer_decay=0.8
            )
            settings = cfg.training.model_copy(update={"seed": seed, "feature_cache": False})
            backbone = prepared.backbone(plan, seed=seed)
            t0 = time.perf_counter()
            refreeze = refreezer(backbone, prepared.train, prepared.val, "cpu") if cached else None
            result = fit(
                backbone,
                plan,
                prepared.schedule(plan),
                prepared.train,
                prepared.val,
                settings,
                refreeze=refreeze,
            )
            seconds = time.perf_counter() - t0
            frozen_at_end = result.final.first_trainable
            results[label].append((seconds, result.final.val_accuracy, frozen_at_end))
            print(
                f"seed {seed} {label}: {seconds:.1f}s, val accuracy "
                f"{result.final.val_accuracy:.4f}, first trainable at the end: {frozen_at_end}",
                file=sys.stderr,
                flush=True,
            )
    base = statistics.mean(r[0] for r in results["static"])
    rows = []
    for label, _, _ in VARIANTS:
        secs = [r[0] for r in results[label]]
        accs = [r[1] for r in results[label]]
        rows.append(
            f"| {label} | {statistics.mean(secs):.1f} | {statistics.mean(secs) / base:.2f}x | "
            f"{statistics.mean(accs):.4f} | {min(accs):.4f}..{max(accs):.4f} | "
            f"{', '.join(str(r[2]) for r in results[label])} |"
        )
    table = "\n".join(rows)
    import torch

    body = f"""
`.venv/bin/python benchmarks/schedules.py --seeds {args.seeds} --epochs {args.epochs}` on
{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (CPU). The quickstart
task (resnet10t pretrained on digits 0-4; 75 training and 300 validation images of digits 5-9,
32 px, {args.epochs} epochs, batch 25). One plan for all (boundary 0, head LR 3e-3, backbone
ratio 0.3, layer decay 0.8, AdamW), each schedule with its default knobs (FreezeOut
`t_0 = 0.5`, linear; AutoFreeze `interval = 1`, `percentile = 50`), {args.seeds} seeds; "+
cache": the blocks a schedule freezes are cached from the epoch they freeze (what a study
does by default), else no cache. "Frozen at the end" is the first trainable block of the last
epoch per seed (0: nothing frozen).

| schedule | train seconds | vs static | mean val accuracy | range | frozen at the end |
| --- | --- | --- | --- | --- | --- |
{table}
"""
    write_section("Progressive-freezing schedules", body)
    print(table)


if __name__ == "__main__":
    main()
