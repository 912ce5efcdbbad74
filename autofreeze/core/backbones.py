"""A backbone is a model cut into an ordered list of freeze blocks (input side first) plus a head.

Blocks are sets of parameter names. For timm models they come from ``model.group_matcher()``,
else from its ``feature_info`` stages (see :mod:`autofreeze.plugins.builtin.timm_backbones`);
other plugins can describe their blocks by parameter-name prefixes with
:meth:`Backbone.from_prefixes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autofreeze.errors import BackboneError


@dataclass(frozen=True)
class Block:
    """One freeze unit: an index (0 = input side), a readable name and its parameter names."""

    index: int
    name: str
    param_names: tuple[str, ...]


@dataclass
class Backbone:
    """A model with its freeze blocks, its head and its preprocessing config.

    Attributes:
        name: the registered backbone name.
        model: the ``nn.Module``; ``model(x)`` returns logits of ``num_classes`` outputs.
        blocks: freeze blocks ordered from the input; the head is never in a block.
        head_param_names: the parameters of the (freshly initialised) classifier.
        data_config: ``mean``, ``std`` and ``input_size`` (C, H, W) the weights expect.
        weights: what the weights came from: ``"none"``, ``"default"`` or a file path.
    """

    name: str
    model: nn.Module
    blocks: list[Block]
    head_param_names: tuple[str, ...]
    data_config: dict[str, Any]
    num_classes: int
    weights: str = "none"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @classmethod
    def from_groups(
        cls,
        name: str,
        model: nn.Module,
        groups: Sequence[Sequence[str]],
        head_param_names: Iterable[str],
        **kwargs: Any,
    ) -> Backbone:
        """Build from parameter-name groups in input order; head params are taken out of them."""
        head = tuple(head_param_names)
        head_set = set(head)
        kept = [names for g in groups if (names := tuple(n for n in g if n not in head_set))]
        labels = [block_name(names) for names in kept]
        # a short name two blocks share (DenseNet: "features") is spelled out for both
        labels = [
            _spelled_out(names) if labels.count(label) > 1 else label
            for names, label in zip(kept, labels, strict=True)
        ]
        blocks = [
            Block(i, label, names)
            for i, (names, label) in enumerate(zip(kept, labels, strict=True))
        ]
        return cls(name, model, blocks, head, **kwargs)

    @classmethod
    def from_prefixes(
        cls,
        name: str,
        model: nn.Module,
        block_prefixes: Sequence[Sequence[str]],
        head_prefixes: Sequence[str],
        **kwargs: Any,
    ) -> Backbone:
        """Build from module-name prefixes: one list of prefixes per block, in input order."""
        params = [n for n, _ in model.named_parameters()]

        def under(prefixes: Sequence[str]) -> list[str]:
            return [n for n in params if any(_is_under(n, p) for p in prefixes)]

        groups = [under(prefixes) for prefixes in block_prefixes]
        return cls.from_groups(name, model, groups, under(head_prefixes), **kwargs)

    def check(self) -> None:
        """Every parameter is in exactly one block or the head; blocks are non-empty."""
        all_params = [n for n, _ in self.model.named_parameters()]
        seen: dict[str, str] = {}
        for owner, names in [(b.name, b.param_names) for b in self.blocks] + [
            ("head", self.head_param_names)
        ]:
            for n in names:
                if n in seen:
                    raise BackboneError(
                        f"backbone {self.name!r}: parameter {n!r} is in both {seen[n]!r} and "
                        f"{owner!r}"
                    )
                seen[n] = owner
        missing = [n for n in all_params if n not in seen]
        if missing:
            raise BackboneError(
                f"backbone {self.name!r}: {len(missing)} parameters belong to no block "
                f"(first: {missing[0]!r})"
            )
        extra = [n for n in seen if n not in set(all_params)]
        if extra:
            raise BackboneError(f"backbone {self.name!r}: unknown parameter {extra[0]!r}")
        if not self.head_param_names:
            raise BackboneError(f"backbone {self.name!r} has no head parameters")

    # -- lookups -----------------------------------------------------------------------------
    def parameters_of(self, names: Iterable[str]) -> list[nn.Parameter]:
        params = dict(self.model.named_parameters())
        return [params[n] for n in names]

    def block_param_count(self, block: Block) -> int:
        return sum(p.numel() for p in self.parameters_of(block.param_names))

    def head_param_count(self) -> int:
        return sum(p.numel() for p in self.parameters_of(self.head_param_names))

    def module_blocks(self) -> dict[str, int | None]:
        """Map each module name to the block that owns all its parameters (or None).

        Parameter-free modules (dropout, drop-path, activations) belong to the block owning the
        parameters of their closest ancestor, so they are switched off with that block.
        """
        owner: dict[str, int] = {}
        for b in self.blocks:
            for n in b.param_names:
                owner[n] = b.index
        for n in self.head_param_names:
            owner[n] = -1
        result: dict[str, int | None] = {}
        for mod_name, _ in self.model.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            owners = {o for n, o in owner.items() if n.startswith(prefix)}
            if len(owners) == 1:
                (only,) = owners
                result[mod_name] = None if only == -1 else only
            elif not owners:
                result[mod_name] = self._ancestor_block(mod_name, result)
            else:
                result[mod_name] = None
        return result

    @staticmethod
    def _ancestor_block(mod_name: str, known: dict[str, int | None]) -> int | None:
        parts = mod_name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:i])
            if parent in known and known[parent] is not None:
                return known[parent]
        return None

    def describe(self, with_params: bool = False) -> dict[str, Any]:
        """Plain-data description of the cut (what ``autofreeze inspect`` prints)."""
        total = sum(p.numel() for p in self.model.parameters())
        blocks = []
        for b in self.blocks:
            row: dict[str, Any] = {
                "index": b.index,
                "name": b.name,
                "params": self.block_param_count(b),
            }
            if with_params:
                row["param_names"] = list(b.param_names)
            blocks.append(row)
        head: dict[str, Any] = {
            "name": block_name(self.head_param_names),
            "params": self.head_param_count(),
        }
        if with_params:
            head["param_names"] = list(self.head_param_names)
        return {
            "backbone": self.name,
            "weights": self.weights,
            "num_classes": self.num_classes,
            "n_blocks": self.n_blocks,
            "total_params": total,
            "input_size": list(self.data_config.get("input_size", ())),
            "cut": self.meta.get("cut"),
            "blocks": blocks,
            "head": head,
        }


def _is_under(param_name: str, prefix: str) -> bool:
    return param_name == prefix or param_name.startswith(prefix + ".")


def block_name(param_names: Sequence[str]) -> str:
    """A readable name: per top-level module, the common module path of its parameters."""
    by_top: dict[str, list[list[str]]] = {}
    for n in param_names:
        parts = n.split(".")
        by_top.setdefault(parts[0], []).append(parts[:-1] or parts)
    pieces = []
    for paths in by_top.values():
        common = paths[0]
        for p in paths[1:]:
            i = 0
            while i < min(len(common), len(p)) and common[i] == p[i]:
                i += 1
            common = common[:i]
        pieces.append(".".join(common) or paths[0][0])
    return "+".join(pieces)


def _spelled_out(param_names: Sequence[str]) -> str:
    """Below the modules' common path, the common path of each child: ``features.conv0`` and
    ``features.norm0`` give ``features.conv0+features.norm0``."""
    paths = [n.split(".")[:-1] or [n] for n in param_names]
    depth = 0
    while all(len(p) > depth + 1 and p[depth] == paths[0][depth] for p in paths):
        depth += 1
    children: dict[str, list[str]] = {}
    for p, n in zip(paths, param_names, strict=True):
        children.setdefault(p[depth] if len(p) > depth else p[-1], []).append(n)
    if len(children) == 1:
        return block_name(param_names)
    return "+".join(block_name(names) for names in children.values())


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_checksum(tensors: Iterable[torch.Tensor]) -> str:
    """A bit-exact checksum of tensors (for 'frozen weights never change' checks)."""
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
