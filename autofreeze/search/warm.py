"""Warm start: a new study runs the best plans of earlier studies first (``[search]
warm_start``; docs/warm_start.md).

People fine-tune again and again: a new version of their dataset, a sibling task, another
backbone of the same family. An earlier study's best plans are a better first guess than the
textbook recipes, so a new study runs them first, before the recipes and the probe's plans.
Only the plans cross over, never the values: those were measured on another task, so each
plan is re-run here, and the sampler learns from what it scores on this one.

Each plan is mapped onto this study before it is queued:

- **boundary**: kept where both backbones have as many blocks; else the same share of the
  depth, ``round(share * n_blocks)`` (half up);
- **head LR**: a multiple of the earlier study's head LR floor (:func:`head_lr_floor`, set by
  its optimizer steps and its head) becomes the same multiple of this study's, where both
  studies recorded one; else it is kept;
- then moved into this search space (:meth:`SearchSpace.clamp`; the boundary into its range
  first); a plan whose schedule or init this space does not search is left out, and said.

Every earlier study is read before the new study is created (:func:`read_warm_start`): one
that cannot be read, is missing, or optimises another metric or direction is refused in one
line and nothing is created. ``"auto"`` picks, once this study's probe has run, the earlier
studies of the same metric whose probe curves are nearest this one's (:func:`pick_similar`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from autofreeze.config import StudyConfig
from autofreeze.config.search import WARM_AUTO, WarmStudy
from autofreeze.errors import AutofreezeError, ConfigError, PlanError
from autofreeze.plan import FreezePlan
from autofreeze.progress import Progress
from autofreeze.search.space import SearchSpace
from autofreeze.study import records
from autofreeze.study.library import (
    StoredStudy,
    close_library,
    comparable,
    open_library,
    read_storage,
    read_study,
    same_objective,
)
from autofreeze.study.storage import mask_url

WARM_PLANS = 3  # best plans taken from each earlier study ([search] warm_plans)
AUTO_STUDIES = 2  # earlier studies "auto" picks at most
GRID = 20  # depth shares at which two probe curves are compared


@dataclass(frozen=True)
class WarmStart:
    """What a new study starts from, read before it is created: the earlier studies its
    config names and, with ``"auto"``, the candidates to pick from once its probe has run."""

    named: tuple[StoredStudy, ...]
    candidates: tuple[StoredStudy, ...] | None  # None: no "auto"
    per_study: int
    searched: tuple[str, ...] = ()  # the storages "auto" looked in (masked), for its line


# -- reading the earlier studies, before the new study exists ---------------------------------
def _address(cfg: StudyConfig, entry: str | WarmStudy) -> tuple[str, str]:
    """(storage URL, study name) of a ``warm_start`` entry (not ``"auto"``)."""
    if isinstance(entry, WarmStudy):
        return entry.storage or cfg.storage_url, entry.study
    from autofreeze.config import load_config

    other = load_config(cfg.resolve(entry))  # its storage and name, as its search has them
    return other.storage_url, other.study.name


def _check(cfg: StudyConfig, earlier: StoredStudy) -> None:
    """Refuse an earlier study whose best plans are not best for this study's objective."""
    if earlier.config is None:
        raise ConfigError(
            f"study {earlier.where} has no stored autofreeze config (not a study `autofreeze "
            "search` made): nothing says what its plans are"
        )
    if not same_objective(earlier, cfg.study.metric, cfg.study.direction):
        raise ConfigError(
            f"study {earlier.where} {earlier.direction}s {earlier.metric}, this study "
            f"{cfg.study.direction}s {cfg.study.metric}: its best plans are best for another "
            "objective; name a study of the same [study] metric"
        )


class _Storages:
    """Each storage a warm start reads, opened once (to read) and closed together."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.opened: dict[str, Any] = {}

    def __call__(self, url: str) -> Any:
        if url not in self.opened:
            self.opened[url] = open_library(url, self.progress)
        return self.opened[url]

    def close(self) -> None:
        for storage in self.opened.values():
            close_library(storage)


def read_warm_start(cfg: StudyConfig, new: bool, progress: Progress) -> WarmStart | None:
    """The earlier studies of ``[search] warm_start``, read (never written) before the study
    ``cfg`` names is created; None without ``warm_start`` or for a study that holds trials
    already (``new`` False: it started long ago).

    Raises:
        ConfigError, StorageError: an entry names an unreadable storage, a missing study, the
            study itself, or a study of another metric or direction; one line, naming the
            config's key.
    """
    entries = cfg.search.warm_start
    if not entries or not new:
        return None
    storages = _Storages(progress)
    try:
        named = []
        for entry in entries:
            if entry == WARM_AUTO:
                continue
            url, name = _address(cfg, entry)
            if (url, name) == (cfg.storage_url, cfg.study.name):
                raise ConfigError(f"names this study itself ({name!r}); name an earlier one")
            earlier = read_study(storages(url), url, name)
            _check(cfg, earlier)
            named.append(earlier)
        candidates = None
        urls = [cfg.storage_url, *(cfg.search.warm_from or [])]
        if WARM_AUTO in entries:
            seen = {(s.url, s.name) for s in named} | {(cfg.storage_url, cfg.study.name)}
            found = [s for u in dict.fromkeys(urls) for s in read_storage(u, storage=storages(u))]
            candidates = tuple(s for s in found if (s.url, s.name) not in seen)
    except AutofreezeError as exc:
        where = str(cfg.path) if cfg.path else "config"
        raise type(exc)(f"{where}: [search] warm_start: {exc}") from None
    finally:
        storages.close()
    return WarmStart(
        tuple(named),
        candidates,
        cfg.search.warm_plans or WARM_PLANS,
        tuple(mask_url(u) for u in dict.fromkeys(urls)) if candidates is not None else (),
    )


# -- "auto": the nearest probe curves --------------------------------------------------------
def profile(probe: dict[str, Any]) -> list[float]:
    """A probe curve as ``GRID`` values at depth shares ``1/GRID .. 1``: each block's accuracy
    above chance (0 at chance, 1 perfect) at the share of the depth its output is, linearly
    interpolated (flat before the first block)."""
    chance = float(probe.get("chance") or 0.0)
    ys = [
        (float(b["val_accuracy"]) - chance) / max(1e-9, 1.0 - chance)
        for b in probe.get("blocks") or []
    ]
    if not ys:
        return []
    n = len(ys)
    out = []
    for j in range(1, GRID + 1):
        x = j / GRID * n - 1  # the position between block outputs: block i sits at i
        if x <= 0:
            out.append(ys[0])
            continue
        i = min(int(x), n - 2) if n > 1 else 0
        frac = x - i if n > 1 else 0.0
        out.append(ys[i] + (ys[min(i + 1, n - 1)] - ys[i]) * frac)
    return out


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How unlike two tasks look to the probe: the mean absolute difference of their curves
    (:func:`profile`), 0 for the same curve, at most 1; infinite where one has none."""
    pa, pb = profile(a), profile(b)
    if not pa or not pb:
        return math.inf
    return sum(abs(x - y) for x, y in zip(pa, pb, strict=True)) / GRID


def pick_similar(
    probe: dict[str, Any], candidates: list[StoredStudy], metric: str, direction: str
) -> list[tuple[StoredStudy, float]]:
    """The earlier studies (at most :data:`AUTO_STUDIES`) of ``metric`` and ``direction``
    whose probe curves are nearest ``probe``, nearest first, with their distance."""
    near = [
        (s, distance(probe, s.probe))
        for s in comparable(candidates, metric, direction)
        if s.probe is not None
    ]
    near = [(s, d) for s, d in near if math.isfinite(d)]
    near.sort(key=lambda sd: (sd[1], sd[0].name))
    return near[:AUTO_STUDIES]


def _auto(
    start: WarmStart, cfg: StudyConfig, probe: dict[str, Any] | None, progress: Progress
) -> list[StoredStudy]:
    """The studies ``"auto"`` picks, said in a line (none: said, and the study starts cold)."""
    where = ", ".join(start.searched)
    if probe is None:
        progress(
            "warm start auto: compares probe curves, but [study] probe = false; starting "
            "without an earlier study"
        )
        return []
    picked = pick_similar(
        probe, list(start.candidates or ()), cfg.study.metric, cfg.study.direction
    )
    if not picked:
        progress(
            f"warm start auto: no earlier study of {cfg.study.metric} ({cfg.study.direction}) "
            f"with a probe record and a finished plan in {where}; starting without one"
        )
        return []
    names = ", ".join(f"{s.name} (distance {d:.3f})" for s, d in picked)
    progress(f"warm start auto: picked {names} by their probe curves, of the studies in {where}")
    return [s for s, _ in picked]


# -- mapping the plans onto this study -------------------------------------------------------
def map_boundary(boundary: int, from_blocks: int | None, to_blocks: int) -> int:
    """The same share of the depth on a backbone of ``to_blocks`` blocks (half up)."""
    if not from_blocks or from_blocks == to_blocks:
        return boundary
    return min(to_blocks, math.floor(boundary / from_blocks * to_blocks + 0.5))


def map_plan(
    plan: dict[str, Any],
    from_blocks: int | None,
    to_blocks: int,
    from_floor: float | None,
    to_floor: float | None,
) -> FreezePlan:
    """An earlier study's plan (as data) on this backbone and this run: boundary by depth
    share, head LR as the same multiple of the head LR floor (where both have one)."""
    head_lr = plan.get("head_lr", FreezePlan.head_lr)
    if from_floor and to_floor:
        head_lr = head_lr / from_floor * to_floor
    boundary = map_boundary(int(plan.get("boundary", 0)), from_blocks, to_blocks)
    return FreezePlan.from_dict({**plan, "boundary": boundary, "head_lr": head_lr})


def run_floor(cfg: StudyConfig, steps: int, fan_in: int) -> float | None:
    """This study's head LR floor (recorded on it for later studies): AdamW's only."""
    from autofreeze.search.space import head_lr_floor

    return head_lr_floor(steps, fan_in) if cfg.training.optimizer == "adamw" else None


@dataclass(frozen=True)
class _Taken:
    name: str  # "<study>#<trial>"
    plan: FreezePlan
    rank: int  # its place among its study's best plans
    source: int  # its study's place in warm_start


def _take(
    earlier: StoredStudy,
    source: int,
    start: WarmStart,
    space: SearchSpace,
    floor: float | None,
    progress: Progress,
) -> list[_Taken]:
    """One earlier study's best plans mapped into ``space``, said in a line (and a note where
    its backbone differs)."""
    n_from = earlier.n_blocks
    if n_from and n_from != space.n_blocks:
        progress(
            f"note: warm start from {earlier.name} ({earlier.backbone}, {n_from} blocks): "
            f"boundaries mapped by depth share onto {space.n_blocks} blocks"
        )
    taken, left_out = [], []
    for rank, t in enumerate(earlier.best_plans(start.per_study)):
        try:
            mapped = map_plan(records.plan(t), n_from, space.n_blocks, earlier.head_lr_floor, floor)
        except (PlanError, TypeError, ValueError):
            left_out.append(t.number)  # a plan of a version that wrote other fields
            continue
        moved = dataclasses.replace(mapped, boundary=space.boundary.clamp(mapped.boundary))
        clamped = space.clamp(moved)
        if clamped is None:
            left_out.append(t.number)
            continue
        taken.append(_Taken(f"{earlier.name}#{t.number}", clamped, rank, source))
    progress(_source_line(earlier, taken, left_out, floor))
    return taken


def _source_line(
    earlier: StoredStudy, taken: list[_Taken], left_out: list[int], floor: float | None
) -> str:
    """``warm start from other (sqlite:///x.db): trials #12 (0.9167), #3 (0.9000); ...``"""
    values = {t.number: records.metric_value(t) for t in earlier.trials}
    shown = ", ".join(
        f"#{n} ({values[n]:.4f})" for n in (int(t.name.rsplit("#", 1)[1]) for t in taken)
    )
    line = f"warm start from {earlier.where}: "
    line += f"trials {shown} run first here" if taken else "no plan to take"
    if left_out:
        line += f"; left out #{', #'.join(map(str, left_out))} (outside this search space)"
    if taken and floor and earlier.head_lr_floor and not math.isclose(floor, earlier.head_lr_floor):
        line += f"; head LRs x{floor / earlier.head_lr_floor:.3g} (the two runs' LR floors)"
    return line


def warm_plans(
    start: WarmStart | None,
    cfg: StudyConfig,
    space: SearchSpace,
    floor: float | None,
    probe: dict[str, Any] | None,
    progress: Progress,
) -> list[tuple[str, str, FreezePlan]]:
    """The earlier studies' best plans as first plans ``(records.WARM, name, plan)``, mapped
    onto this study, distinct: each study's best plan first (in the list's order), then the
    others ordered by this task's probe: the plan nearest the probe's boundary first, ties by
    its rank in its study, then by the study's place in the list.

    The best plans lead because a small budget keeps only the first few first plans: ordered
    by the probe alone, a sibling study's own choice ran in 20 of 36 warm-started searches of
    benchmarks/warm_start.py (a neighbour nearer this probe's boundary took the one place).

    ``floor``: this run's head LR floor; ``probe``: this study's probe record, or None.
    """
    if start is None:
        return []
    studies = list(start.named)
    if start.candidates is not None:
        chosen = _auto(start, cfg, probe, progress)
        studies += [s for s in chosen if s not in studies]
    taken: list[_Taken] = []
    for i, earlier in enumerate(studies):
        taken += _take(earlier, i, start, space, floor, progress)
    seen: set[tuple[Any, ...]] = set()
    distinct = []
    for t in sorted(taken, key=lambda t: (t.rank, t.source)):
        key = tuple(sorted(t.plan.to_params().items()))
        if key not in seen:
            seen.add(key)
            distinct.append(t)
    if probe is not None and probe.get("boundary") is not None:
        k = int(probe["boundary"])

        def order(t: _Taken) -> tuple[int, ...]:
            if t.rank == 0:  # a study's best, in the list's order
                return (0, t.source)
            return (1, abs(t.plan.boundary - k), t.rank, t.source)

        distinct.sort(key=order)
    return [(records.WARM, t.name, t.plan) for t in distinct]


def unlike(
    warm: list[tuple[str, str, FreezePlan]],
    space: SearchSpace,
    plans: list[tuple[str, FreezePlan]],
) -> list[tuple[str, FreezePlan]]:
    """``plans`` without those that run as one of the ``warm`` plans once moved into ``space``
    (a probe's plan an earlier study ran too, say)."""
    runs = {tuple(sorted(p.to_params().items())) for _, _, p in warm}

    def key(plan: FreezePlan) -> tuple[Any, ...] | None:
        clamped = space.clamp(plan)
        return None if clamped is None else tuple(sorted(clamped.to_params().items()))

    return [(name, plan) for name, plan in plans if key(plan) not in runs]
