"""The terminal tables: a plan in a few words, numbers rounded one way, columns that fit 100
characters unless ``--wide``, and the rows of ``autofreeze trials`` sorted and filtered."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autofreeze.review.format import duration, number
from autofreeze.review.story import freezes_blocks

WIDTH = 100  # the default tables fit this many characters
# the default columns of `autofreeze trials` and of the comparison `search` prints; --wide
# shows every column (review.TRIAL_COLUMNS, review.COMPARISON_COLUMNS)
TRIAL_SHORT = ("number", "name", "state", "value", "epochs_run", "seconds", "plan", "reason")
COMPARISON_SHORT = ("recipe", "state", "value", "seconds", "plan")
LABELS = {"number": "#", "epochs_run": "epochs", "seconds": "time"}  # headers of short tables
# cut with "…" to fit, in this order
SQUEEZE = ("task", "plan", "reason", "knobs", "name", "recipe")
ROUNDED = ("head_lr", "backbone_lr_ratio", "layer_decay", "frozen_fraction")  # 3 digits
STATES = ("complete", "pruned", "fail", "running", "waiting")  # `trials --state`


def short_plan(plan: dict[str, Any], n_blocks: int | None = None) -> str:
    """``k=1 lp_ft(2,0.3) lr=0.025 bb=0.89x ld=0.89``: the boundary, the schedule with its
    knob values in order (their names: ``--wide``), the head LR, the backbone's LR ratio
    where a backbone block can train, the layer decay, BatchNorm (where a block is frozen) and
    init where not default."""
    if not plan:
        return ""
    schedule = plan.get("schedule", "static")
    knobs = ",".join(number(v, 2) for v in (plan.get("schedule_params") or {}).values())
    parts = [f"k={plan.get('boundary')}", f"{schedule}({knobs})" if knobs else schedule]
    parts.append(f"lr={number(plan.get('head_lr'), 2)}")
    if schedule != "static" or n_blocks is None or plan.get("boundary", 0) < n_blocks:
        parts.append(f"bb={number(plan.get('backbone_lr_ratio', 1.0), 2)}x")
    if plan.get("layer_decay", 1.0) != 1.0:
        parts.append(f"ld={number(plan['layer_decay'], 2)}")
    if plan.get("bn_mode", "eval") != "eval" and freezes_blocks(plan):
        parts.append(f"bn={plan['bn_mode']}")
    if plan.get("init", "pretrained") != "pretrained":
        parts.append(str(plan["init"]))
    if plan.get("augment"):
        parts.append(f"aug={plan['augment']}")
    return " ".join(parts)


def cell(column: str, v: Any) -> str:
    """A value as the tables show it: the metric to 4 decimals, times as durations, the plan's
    rates to 3 significant digits, other numbers to 4."""
    if v is None:
        return ""
    if column == "seconds" and isinstance(v, int | float):
        return duration(v)
    if isinstance(v, float):
        if column == "value":
            return f"{v:.4f}"
        return f"{v:.3g}" if column in ROUNDED else f"{v:.4g}"
    return str(v)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def format_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    width: int | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Left-aligned text columns; with ``width``, the columns of ``SQUEEZE`` are cut (with
    "…") until every line fits, and the ones left empty in every row are dropped."""
    labels = labels or {}
    cells = [[cell(c, r.get(c)) for c in columns] for r in rows]
    keep = [
        i
        for i, c in enumerate(columns)
        if width is None or c not in SQUEEZE or not cells or any(row[i] for row in cells)
    ]
    heads = [labels.get(columns[i], columns[i]) for i in keep]
    cells = [[row[i] for i in keep] for row in cells]
    widths = [max([len(h)] + [len(row[j]) for row in cells]) for j, h in enumerate(heads)]
    if width is not None:
        for name in SQUEEZE:
            over = sum(widths) + 2 * (len(widths) - 1) - width
            if over <= 0:
                break
            if name in heads:
                j = heads.index(name)
                widths[j] = max(len(heads[j]), 8, widths[j] - over)
        cells = [[_cut(v, w) for v, w in zip(row, widths, strict=True)] for row in cells]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(heads), "  ".join("-" * w for w in widths), *map(line, cells)])


def select_rows(
    rows: Sequence[dict[str, Any]],
    *,
    sort: str | None = None,
    maximize: bool = True,
    reverse: bool = False,
    top: int | None = None,
    states: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Rows in the given states (``STATES``), sorted by a column (``value``: best first for
    the study's direction; any other column ascending; rows without a value last), the first
    ``top`` of them; ``reverse`` turns the order round (rows without a value still last)."""
    wanted = {s.upper() for s in states}
    out = [r for r in rows if not wanted or r.get("state") in wanted]
    if sort is not None:
        best_first = sort == "value" and maximize

        def key(r: dict[str, Any]) -> Any:
            v = r.get(sort)
            if isinstance(v, float) and math.isnan(v):
                v = None
            if isinstance(v, int | float):
                return (0, -v if best_first else v)
            return (0, str(v)) if v not in (None, "") else (1, 0)

        present = [r for r in out if key(r)[0] == 0]
        missing = [r for r in out if key(r)[0] == 1]
        out = sorted(present, key=key, reverse=reverse) + missing
    return out[:top] if top is not None else out
