"""Cut a timm model into freeze blocks in input order; three sources, tried in turn.

- ``group_matcher``: the model's own ``group_matcher()``, the grouping timm uses for layer-wise
  LR decay (``coarse=True`` for ``granularity="stage"``);
- ``feature_info``: for a model without one (MetaFormer, PiT, CSATv2), each stage module that
  ``model.feature_info`` lists (timm's feature-extraction points, in input order) is a block; the
  parameters declared before the first stage (the stem) join the first block, those declared
  after the last (a final norm, pre-logits) join the last;
- ``children``: without usable stage information, each top-level module holding parameters, in
  registration order (the forward order of timm models); the model's own parameters (tokens,
  position embeddings) join the first block.

The fallbacks know no finer cut, so ``"block"`` and ``"stage"`` give the same one there. The head
(the classifier) is never in a block.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

from autofreeze.core.weights import first_line
from autofreeze.errors import BackboneError

if TYPE_CHECKING:
    from torch import nn

CUTS = ("group_matcher", "feature_info", "children")


class Unusable(Exception):
    """Why a fallback source cannot cut the model (the rest of a sentence)."""


def cut_model(
    model: nn.Module,
    head_param_names: Sequence[str],
    *,
    name: str,
    granularity: str = "block",
    fallback: bool = True,
) -> tuple[list[list[str]], str]:
    """Parameter-name groups in input order (head parameters left out) and the cut used.

    Without ``fallback`` only ``group_matcher()`` is tried. Raises :class:`BackboneError`, one
    line, when no source can cut the model.
    """
    groups = group_matcher_groups(model, name=name, granularity=granularity)
    if groups is not None:
        return groups, "group_matcher"
    if not fallback:
        raise BackboneError(
            f"timm model {name!r} defines no group_matcher(), so it cannot be cut into blocks"
        )
    head = set(head_param_names)
    params = [n for n, _ in model.named_parameters() if n not in head]
    try:
        return feature_info_groups(model, params), "feature_info"
    except Unusable as exc:
        why = str(exc)
    groups = children_groups(model, params)
    if groups:
        return groups, "children"
    raise BackboneError(
        f"timm model {name!r} cannot be cut into blocks: it defines no group_matcher(), its "
        f"feature_info {why}, and no top-level module but the head holds parameters"
    )


def group_matcher_groups(
    model: nn.Module, *, name: str, granularity: str
) -> list[list[str]] | None:
    """The groups of ``model.group_matcher()``; ``None`` if the model defines none."""
    from timm.models._manipulate import group_parameters

    try:
        matcher = model.group_matcher(coarse=granularity == "stage")
    except (AttributeError, NotImplementedError):
        return None
    except AssertionError as exc:  # timm asserts where a model lacks coarse grouping (RDNet)
        raise BackboneError(
            f"timm model {name!r} cannot be cut by {granularity} ({first_line(exc)})"
            + ("; use granularity 'block'" if granularity == "stage" else "")
        ) from None
    grouped = group_parameters(model, matcher)
    return [grouped[k] for k in sorted(grouped)]


def stage_modules(model: nn.Module) -> list[str]:
    """The module names of ``model.feature_info`` (a list of dicts, or timm's ``FeatureInfo``)."""
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)
    if not info:
        raise Unusable("is missing")
    if not isinstance(info, list | tuple) or not all(
        isinstance(d, dict) and isinstance(d.get("module"), str) and d["module"] for d in info
    ):
        raise Unusable("names no modules")
    return [d["module"] for d in info]


def feature_info_groups(model: nn.Module, params: Sequence[str]) -> list[list[str]]:
    """One group per stage module of ``feature_info`` holding parameters, in its order; the
    parameters declared before the first stage join it, those after the last join the last.

    ``params``: the model's parameter names in declaration order, the head left out. Raises
    :class:`Unusable` if a module is not in the model, a parameter would be in two stages or
    between two, the stages are declared in another order, or fewer than two hold parameters.
    """
    modules = dict(model.named_modules())
    index = {n: i for i, n in enumerate(params)}
    owner: dict[str, str] = {}
    stages: list[list[str]] = []
    for mod in stage_modules(model):
        if mod not in modules:
            raise Unusable(f"names {mod!r}, which the model does not hold")
        inside = [n for n in params if n.startswith(mod + ".")]
        for n in inside:
            if n in owner:
                raise Unusable(f"puts {n!r} in both {owner[n]!r} and {mod!r}")
            owner[n] = mod
        if inside:  # a feature point without parameters (an activation) is no stage of its own
            stages.append(inside)
    if len(stages) < 2:
        raise Unusable("lists fewer than two modules with parameters")
    for before, after in pairwise(stages):
        if index[before[-1]] > index[after[0]]:
            raise Unusable("lists its stages in another order than the model declares them")
    first, last = index[stages[0][0]], index[stages[-1][-1]]
    rest = [n for n in params if n not in owner]
    between = [n for n in rest if first < index[n] < last]
    if between:
        raise Unusable(f"leaves {between[0]!r} between two stages")
    stages[0] = [n for n in rest if index[n] < first] + stages[0]
    stages[-1] = stages[-1] + [n for n in rest if index[n] > last]
    return stages


def children_groups(model: nn.Module, params: Sequence[str]) -> list[list[str]]:
    """One group per top-level module holding parameters (``params``: the head left out), in
    registration order; parameters of the model itself join the first. Empty if none holds any.
    """
    groups = []
    for child, _ in model.named_children():
        inside = [n for n in params if n.startswith(child + ".")]
        if inside:
            groups.append(inside)
    if groups:
        groups[0] = [n for n in params if "." not in n] + groups[0]
    return groups
