"""A trial told in words: the plan, the freeze map, the cost, the outcome (the study's
story, built on it, is :mod:`autofreeze.review.study_story`).

Everything here reads only what :mod:`autofreeze.study.records` stores, so the same text is
written into optuna-dashboard's notes (:mod:`autofreeze.review.dashboard`), the report
(:mod:`autofreeze.review.report`) and the terminal, for trials of any worker and any autofreeze
version that stored a history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from autofreeze.recipes import RECIPE_WORDS
from autofreeze.review.format import number
from autofreeze.study import records

FROZEN, TRAINING, CACHED = "frozen", "training", "cached"
SOURCE_WORDS = {"computed": "computed by this trial", "memory": "memory", "disk": "disk"}


def schedule_words(plan: dict[str, Any], n_blocks: int | None = None) -> str:
    """How the plan's schedule moves the boundary over training, in one phrase."""
    k, schedule = plan.get("boundary", 0), plan.get("schedule", "static")
    knobs = plan.get("schedule_params") or {}
    of = f" of {n_blocks}" if n_blocks is not None else ""
    frozen = "no block frozen" if k == 0 else f"blocks 0-{k - 1}{of} frozen"
    if k == 1:
        frozen = f"block 0{of} frozen"
    if n_blocks is not None and k >= n_blocks:
        frozen = f"all {n_blocks} blocks frozen (head only)"
    if schedule == "static":
        return f"{frozen} throughout"
    if schedule == "gradual":
        every = knobs.get("every", 1)
        return (
            f"head only at first, then one block unfrozen every {every} epoch"
            f"{'s' if every != 1 else ''} down to block {k}"
        )
    if schedule == "lp_ft":
        return (
            f"head only for {knobs.get('lp_epochs', '?')} epochs, then fine-tune from block {k} "
            f"at {knobs.get('ft_lr_scale', 1):.2g}x the LRs"
        )
    if schedule == "freezeout":
        return (
            f"{frozen} at first; FreezeOut freezes the rest from the input, the first at "
            f"{knobs.get('t_0', '?')} of training ({knobs.get('scaling', 'linear')} spacing)"
        )
    if schedule == "autofreeze":
        return (
            f"{frozen} at first; AutoFreeze freezes a block whose gradient change falls below "
            f"the {knobs.get('percentile', '?')} percentile, checked every "
            f"{knobs.get('interval', '?')} epochs"
        )
    words = ", ".join(f"{n}={v}" for n, v in knobs.items())
    return f"{frozen}, schedule {schedule}{' (' + words + ')' if words else ''}"


def freezes_blocks(plan: dict[str, Any]) -> bool:
    """Whether a plan freezes a block at some epoch: a boundary above 0, or any schedule but
    ``static`` (they start from the head, or freeze blocks as training goes). Only then does
    its BatchNorm mode, which acts in frozen blocks, mean anything."""
    return plan.get("boundary", 0) > 0 or plan.get("schedule", "static") != "static"


def plan_words(plan: dict[str, Any], n_blocks: int | None = None) -> str:
    """The whole plan in one sentence a reviewer reads without the parameter names."""
    if not plan:
        return "(no plan recorded)"
    parts = [schedule_words(plan, n_blocks)]
    parts.append(f"head LR {number(plan.get('head_lr'), 2)}")
    head_only = n_blocks is not None and plan.get("boundary", 0) >= n_blocks
    if not head_only or plan.get("schedule") not in (None, "static"):
        decay = plan.get("layer_decay", 1.0)
        parts.append(
            f"backbone at {plan.get('backbone_lr_ratio', 1.0):.2g}x"
            + (f" with layer decay {decay:.2g}" if decay != 1.0 else "")
        )
    if freezes_blocks(plan):
        parts.append(f"BatchNorm {plan.get('bn_mode', 'eval')} in frozen blocks")
    if plan.get("init") == "scratch":
        parts.append("random init")
    if plan.get("augment"):
        parts.append(f"augment {plan['augment']}")
    return "; ".join(parts)


def trial_title(t: FrozenTrial) -> str:
    """``trial 4 · baseline lp_ft``, ``trial 0 · warm other#12`` or ``trial 12 · searched``."""
    name = records.name(t)
    kind = {"recipe": "baseline ", records.WARM: "warm ", records.PORTFOLIO: "portfolio "}
    return f"trial {t.number} · {kind.get(records.kind(t), '')}{name}"


@dataclass
class FreezeMap:
    """Which block did what in which epoch: ``cells[block][epoch]`` is frozen, training or
    cached (frozen, and its output read from a cache); ``lrs[block][epoch]`` the LR of a
    training block; the last row is the head."""

    blocks: list[str]
    epochs: list[int]
    cells: list[list[str]]
    lrs: list[list[float | None]]
    bn_mode: str

    @property
    def froze(self) -> bool:
        """Whether a block was frozen (or cached) in some epoch: else BatchNorm's mode in
        frozen blocks says nothing about this trial."""
        return any(c in (FROZEN, CACHED) for cells in self.cells[:-1] for c in cells)

    def rows(self) -> list[tuple[str, list[str]]]:
        """Each row's label and its cells as text: the LR where the group trains."""
        out = []
        for name, cells, lrs in zip(self.blocks, self.cells, self.lrs, strict=True):
            shown = [
                number(lr, 2) if c == TRAINING else c for c, lr in zip(cells, lrs, strict=True)
            ]
            out.append((name, shown))
        return out


def freeze_map(t: FrozenTrial) -> FreezeMap | None:
    """The trial's freeze map from its history; None before its first epoch."""
    history = records.history(t)
    plan = records.plan(t)
    blocks = records.blocks(t)
    if not history or not plan:
        return None
    if blocks is None:  # a study of an older version: names of the frozen blocks only
        n = max(plan.get("boundary", 0), max(h.get("trainable_from", 0) for h in history))
        blocks = [f"block{i}" for i in range(n)]
    n = len(blocks)
    cells: list[list[str]] = [[] for _ in range(n + 1)]
    lrs: list[list[float | None]] = [[] for _ in range(n + 1)]
    for h in history:
        first = h.get("trainable_from", plan.get("boundary", 0))
        cached = h.get("cached", 0)
        group_lrs = h.get("lrs") or {}
        for i in range(n):
            state = CACHED if i < cached else FROZEN if i < first else TRAINING
            cells[i].append(state)
            lrs[i].append(group_lrs.get(f"block{i}") if state == TRAINING else None)
        cells[n].append(TRAINING)
        lrs[n].append(group_lrs.get("head", plan.get("head_lr")))
    return FreezeMap(
        blocks=[*blocks, "head"],
        epochs=[h["epoch"] for h in history],
        cells=cells,
        lrs=lrs,
        bn_mode=plan.get("bn_mode", "eval"),
    )


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v).replace("|", "/") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def freeze_map_markdown(fm: FreezeMap) -> str:
    """Blocks as rows (input first), epochs as columns; a training cell shows its LR."""
    header = ["block", *(f"ep {e}" for e in fm.epochs)]
    table = md_table(header, [[name, *cells] for name, cells in fm.rows()])
    frozen = (
        f"*frozen*: no gradient, BatchNorm `{fm.bn_mode}`; *cached*: frozen and its output read "
        "from the cache; "
        if fm.froze
        else ""
    )
    return f"{table}\n\n{frozen}a number: the block trains at that learning rate."


def outcome(t: FrozenTrial, metric: str) -> str:
    """What became of the trial, in words."""
    v = records.metric_value(t)
    value = "-" if v is None else f"{v:.4f}"
    if t.state == TrialState.COMPLETE:
        return f"complete: {metric} {value}"
    if t.state == TrialState.PRUNED:
        at = records.pruned_at_epoch(t)
        return f"pruned at epoch {at}: it trailed the other trials there" if at else "pruned"
    if t.state == TrialState.FAIL:
        return f"failed: {records.fail_reason(t) or 'interrupted; re-queued'}"
    return t.state.name.lower()


def cost_rows(t: FrozenTrial) -> list[list[Any]]:
    c = records.cost(t)
    rows = [
        ["wall time (s)", c[records.SECONDS]],
        ["trainable parameters (most at once)", c[records.TRAINABLE_PARAMS]],
        ["frozen share of the parameters", records.frozen_fraction(t)],
        ["training examples per second", c[records.EXAMPLES_PER_SECOND]],
        ["peak memory (MB)", c[records.PEAK_MEMORY_MB]],
    ]
    cache = records.cache(t)
    if cache:
        where = (
            f"not cached at block {cache.get('boundary')}: {cache.get('reason')}"
            if cache.get("kind") == "none"
            else f"{cache['kind']} cache of blocks 0-{cache['boundary'] - 1} "
            f"({SOURCE_WORDS.get(cache.get('source'), cache.get('source'))})"
        )
        rows.append(["frozen work", where])
    return [r for r in rows if r[1] is not None]


def trial_note(t: FrozenTrial, metric: str) -> str:
    """The Markdown note optuna-dashboard shows on the trial's page."""
    plan = records.plan(t)
    n = records.n_blocks(t)
    lines = [f"## {trial_title(t)}", "", f"**{outcome(t, metric)}**", ""]
    if records.baseline(t):
        lines += [f"Textbook recipe: {RECIPE_WORDS.get(records.baseline(t), '')}.", ""]
    lines += [f"**Plan:** {plan_words(plan, n)}.", ""]
    fm = freeze_map(t)
    if fm is not None:
        lines += ["### Freeze map", "", freeze_map_markdown(fm), ""]
    events = records.phase_events(t)
    if events:
        lines += ["### Phase changes", "", *(f"- {e}" for e in events), ""]
    history = records.history(t)
    if history:
        rows = [
            [h["epoch"], h["phase"], h["train_loss"], h["val_loss"], h["val_accuracy"]]
            for h in history
        ]
        header = ["epoch", "phase", "train loss", "val loss", "val accuracy"]
        lines += ["### Learning curve", "", md_table(header, rows), ""]
        if any(h["val_accuracy"] is None for h in history):  # md_table leaves None blank
            lines += ["A blank val cell: that epoch was not validated (nothing read it).", ""]
    costs = cost_rows(t)
    if costs:
        lines += ["### Cost", "", md_table(["", "value"], costs), ""]
    return "\n".join(lines).rstrip() + "\n"
