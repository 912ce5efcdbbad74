"""Split forward: a backbone cut at freeze boundary ``k`` into ``prefix(x)`` (blocks ``0..k-1``
and what runs before them) and ``suffix(h)`` (the rest, head included), with
``suffix(prefix(x)) == model(x)``.

The cut is derived from the model's structure, not from a table per model: the model is traced
with ``torch.fx``, each module a leaf unless its parameters span several freeze blocks (so the
graph is the model's own glue code calling its blocks), and every node is owned by the block
whose parameters it uses. The cut lies before the first node of a block ``>= k``; it is valid
when exactly one value crosses it (what the cache stores), the input image does not, and no node
after it uses a frozen block. That holds for chains of stages (ResNet/ResNeXt, ConvNeXt,
EfficientNet, MobileNet v2-v4, RegNet) and for ViT/DeiT (class token and position embedding join
the stem). Other models raise :class:`SplitError` with the reason, and train uncached.

The suffix is traced twice, in train and in eval mode, because glue code may read
``self.training`` at trace time; the prefix is traced in eval mode, which is how frozen blocks
run (dropout and drop-path off, BatchNorm frozen with ``bn_mode = "eval"``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from autofreeze.core.backbones import Backbone

HEAD = -1


class SplitError(ValueError):
    """The backbone cannot be split at this boundary (the reason is the message)."""


class _Tracer(fx.Tracer):
    def __init__(self, expand: set[str]) -> None:
        super().__init__()
        self.expand = expand

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name not in self.expand


def _owners(backbone: Backbone) -> tuple[dict[str, int], dict[str, set[int]]]:
    """Block of each parameter (``HEAD`` for the head) and the blocks under each module."""
    param_owner = {n: b.index for b in backbone.blocks for n in b.param_names}
    param_owner.update({n: HEAD for n in backbone.head_param_names})
    under: dict[str, set[int]] = {}
    for mod_name, _ in backbone.model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        under[mod_name] = {o for n, o in param_owner.items() if n.startswith(prefix)}
    return param_owner, under


def _trace(backbone: Backbone, training: bool) -> fx.Graph:
    _, under = _owners(backbone)
    expand = {name for name, owners in under.items() if len(owners) > 1}
    model = backbone.model
    was = model.training
    model.train(training)
    # the image is the one input; optional arguments (an attention mask) keep their defaults
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    fixed = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    try:
        return _Tracer(expand).trace(model, concrete_args=fixed or None)
    except Exception as exc:  # torch.fx fails in many ways on data-dependent code
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SplitError(f"torch.fx cannot trace {type(model).__name__} ({first})") from None
    finally:
        model.train(was)


def _node_owner(
    node: fx.Node, param_owner: dict[str, int], under: dict[str, set[int]]
) -> int | None:
    """The block a node computes with, ``HEAD``, or None for parameter-free glue."""
    if node.op == "call_module":
        owners = under.get(str(node.target), set())
        return next(iter(owners)) if len(owners) == 1 else None
    if node.op == "get_attr":
        target = str(node.target)
        if target in param_owner:
            return param_owner[target]
        owners = under.get(target.rpartition(".")[0], set())  # a buffer: its module's block
        return next(iter(owners)) if len(owners) == 1 else None
    return None


def _mode_dependent(module: nn.Module) -> str | None:
    """Why a module outside every frozen block would not compute the same in training."""
    for name, m in module.named_modules():
        where = f" at {name}" if name else ""
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return f"BatchNorm{where}"
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return f"dropout p={m.p}{where}"
        for attr in ("drop_prob", "prob"):  # timm's DropPath, DropBlock, PatchDropout
            if float(getattr(m, attr, 0) or 0) > 0:
                return f"{type(m).__name__} {attr}={getattr(m, attr)}{where}"
    return None


def _cut(
    graph: fx.Graph, backbone: Backbone, k: int
) -> tuple[list[fx.Node], list[fx.Node], fx.Node]:
    """(prefix nodes, suffix nodes, the one value crossing the cut)."""
    param_owner, under = _owners(backbone)
    nodes = list(graph.nodes)
    owner = {n: _node_owner(n, param_owner, under) for n in nodes}
    start = next(
        (
            i
            for i, n in enumerate(nodes)
            if owner[n] is not None and (owner[n] >= k or owner[n] == HEAD)
        ),
        None,
    )
    if start is None:
        raise SplitError(f"no node of block {k} or the head found in the traced graph")
    prefix, suffix = nodes[:start], nodes[start:]
    late = [n for n in suffix if owner[n] is not None and 0 <= owner[n] < k]
    if late:
        raise SplitError(f"{late[0].target} of frozen block {owner[late[0]]} runs after block {k}")
    in_prefix = set(prefix)
    crossing = {
        arg
        for n in suffix
        for arg in n.all_input_nodes
        if arg in in_prefix and arg.op != "get_attr"
    }
    if any(a.op == "placeholder" for a in crossing):
        raise SplitError(f"the input image is used again after block {k} starts")
    if len(crossing) != 1:
        raise SplitError(f"{len(crossing)} values cross the cut before block {k}, not one")
    modules = dict(backbone.model.named_modules())
    for n in prefix:
        if n.op == "call_module" and owner[n] is None:
            why = _mode_dependent(modules[str(n.target)])
            if why:
                raise SplitError(
                    f"{n.target} ({why}) runs before block {k} outside every frozen block, in "
                    "training mode: its output is not a fixed function of the image"
                )
    return prefix, suffix, next(iter(crossing))


def _prefix_module(model: nn.Module, prefix: list[fx.Node], h: fx.Node) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in prefix:
        env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(env[h])
    return fx.GraphModule(model, graph, class_name="Prefix")


def _suffix_module(
    model: nn.Module, prefix: list[fx.Node], suffix: list[fx.Node], h: fx.Node
) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {h: graph.placeholder("h")}
    kept = set(prefix)

    def arg(a: fx.Node) -> fx.Node:
        if a not in env and a in kept and a.op == "get_attr":  # a parameter used on both sides
            env[a] = graph.node_copy(a)
        return env[a]

    for n in suffix:
        env[n] = graph.node_copy(n, arg)
    return fx.GraphModule(model, graph, class_name="Suffix")


@dataclass
class Split:
    """``prefix`` (eval mode: how frozen blocks run) and the suffix in both modes."""

    boundary: int
    prefix: fx.GraphModule
    suffix_train: fx.GraphModule
    suffix_eval: fx.GraphModule

    def suffix(self, training: bool) -> fx.GraphModule:
        return self.suffix_train if training else self.suffix_eval


def split_at(backbone: Backbone, k: int) -> Split:
    """Split ``backbone`` before block ``k`` (``1 <= k < n_blocks``); see the module doc."""
    if not 1 <= k < backbone.n_blocks:
        raise SplitError(
            f"boundary {k} leaves no frozen prefix to split off (1..{backbone.n_blocks - 1})"
        )
    model = backbone.model
    eval_graph = _trace(backbone, training=False)
    prefix, suffix, h = _cut(eval_graph, backbone, k)
    train_graph = _trace(backbone, training=True)
    t_prefix, t_suffix, t_h = _cut(train_graph, backbone, k)
    return Split(
        k,
        _prefix_module(model, prefix, h),
        _suffix_module(model, t_prefix, t_suffix, t_h),
        _suffix_module(model, prefix, suffix, h),
    )


class SuffixNet(nn.Module):
    """The suffix, traced in the train or the eval mode, chosen by the mode of the model it
    shares its modules with (the freezer and evaluation set that one). Cached outputs stored
    in a narrower dtype are computed on in float32."""

    def __init__(self, split: Split, model: nn.Module) -> None:
        super().__init__()
        self.split = split
        self._model = [model]  # not a submodule: its parameters are the model's already

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.split.suffix(self._model[0].training)(h.float())


@torch.no_grad()
def prefix_outputs(
    split: Split, x: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 256
) -> torch.Tensor:
    """The prefix's output for every image of ``x`` (a tensor, or its batches in order; the
    backbone's frozen blocks in eval mode: the caller sets the modes, see
    :meth:`autofreeze.core.freezing.Freezer.train_mode`), on the CPU."""
    device = next(split.prefix.parameters(), torch.empty(0)).device
    batches = x.split(batch_size) if isinstance(x, torch.Tensor) else x
    return torch.cat([split.prefix(batch.to(device)).cpu() for batch in batches])
