"""Built-in backbones: every timm model, by name (also ``hf-hub:org/repo`` names).

``weights`` is ``"none"`` (random init), ``"default"`` (the model's default pretrained weights
from the hub; needs internet) or a path to a local ``.safetensors`` / ``.pth`` / ``.pt`` file.
Blocks come from timm's ``group_matcher()``: ``granularity="block"`` is its fine grouping,
``"stage"`` its coarse one; a model without one is cut by its ``feature_info`` stages, else by its
top-level modules (:mod:`._timm_cut`; ``meta["cut"]`` says which). torch and timm are imported
only when a backbone is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from autofreeze.core.weights import first_line, load_state_dict, reachable, read_state_dict
from autofreeze.errors import BackboneError, UnknownNameError, WeightsError
from autofreeze.hookspecs import BackboneRegister, hookimpl
from autofreeze.plugins.builtin._timm_cut import cut_model

if TYPE_CHECKING:
    from torch import nn

    from autofreeze.core.backbones import Backbone

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class TimmNamespace:
    """Resolves any name ``timm.create_model`` knows."""

    label = "timm"

    def names(self) -> Iterable[str]:
        import timm

        return timm.list_models()

    def handles(self, name: str) -> bool:
        if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
            return True
        import timm

        return timm.is_model(name)

    def create(
        self, name: str, *, num_classes: int, weights: str | None, granularity: str
    ) -> Backbone:
        return create_timm_backbone(
            name, num_classes=num_classes, weights=weights, granularity=granularity
        )


def create_timm_backbone(
    name: str, *, num_classes: int, weights: str | None = None, granularity: str = "block"
) -> Backbone:
    """Build a timm model with a fresh ``num_classes`` head and cut it into blocks."""
    from autofreeze.core.backbones import Backbone

    weights = weights or "none"
    if weights == "default":
        model = _create_pretrained(name, num_classes)
    else:
        model = _create_random(name, num_classes)
        if weights != "none":
            load_weights(model, Path(weights), name)
    head = classifier_param_names(model)
    groups, cut = cut_model(model, head, name=name, granularity=granularity)
    import timm.data

    data_config = timm.data.resolve_data_config({}, model=model)
    return Backbone.from_groups(
        name,
        model,
        groups,
        head,
        data_config={
            "mean": tuple(data_config["mean"]),
            "std": tuple(data_config["std"]),
            "input_size": tuple(data_config["input_size"]),
        },
        num_classes=num_classes,
        weights=weights,
        meta={"granularity": granularity, "family": type(model).__name__, "cut": cut},
    )


def classifier_param_names(model: nn.Module) -> list[str]:
    """The parameters timm resets for a new number of classes (its ``classifier`` config)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    prefixes = [classifier] if isinstance(classifier, str) else list(classifier or [])
    names = [n for n, _ in model.named_parameters()]
    found = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
    if found:
        return found
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for mod_name, module in model.named_modules():
        if head is not None and module is head:
            return [f"{mod_name}.{n}" for n, _ in module.named_parameters()]
    raise BackboneError(f"cannot find the classifier of {type(model).__name__}")


@contextmanager
def _offline_if_hub_unreachable() -> Iterator[bool]:
    """Yield whether the hub is unreachable; if so, hub calls fail at once instead of retrying.

    Cached files still load in offline mode.
    """
    import huggingface_hub.constants as hf_constants

    offline = not reachable("huggingface.co")
    saved = hf_constants.HF_HUB_OFFLINE
    if offline:
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield offline
    finally:
        hf_constants.HF_HUB_OFFLINE = saved


def _create_random(name: str, num_classes: int) -> nn.Module:
    import timm

    if not name.startswith(("hf-hub:", "hf_hub:")):
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes)
        except RuntimeError as exc:
            raise BackboneError(f"cannot build timm model {name!r}: {first_line(exc)}") from None
    with _offline_if_hub_unreachable() as offline:  # hf-hub: names need the hub for their config
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes)
        except Exception as exc:  # network errors come in many types (requests, hf_hub, urllib)
            why = "the hub is unreachable and the config is not cached" if offline else exc
            raise BackboneError(f"cannot build timm model {name!r}: {first_line(why)}") from None


def _create_pretrained(name: str, num_classes: int) -> nn.Module:
    import timm

    with _offline_if_hub_unreachable() as offline:
        try:
            return timm.create_model(name, pretrained=True, num_classes=num_classes)
        except Exception as exc:  # network errors come in many types (requests, hf_hub, urllib)
            raise WeightsError(
                f"cannot get the default pretrained weights of {name!r}"
                + (" (the hub is unreachable)" if offline else f" ({first_line(exc)})")
                + '; pass a local file instead: weights = "/path/to/weights.safetensors" in '
                "[backbone] (or --weights PATH)"
            ) from None


def load_weights(model: nn.Module, path: Path, name: str) -> None:
    """Load a local weights file, ignoring only a classifier whose class count differs."""
    load_state_dict(
        model, read_state_dict(path), classifier_param_names(model), source=str(path), name=name
    )


@hookimpl
def register_backbones(register: BackboneRegister) -> None:
    register.namespace(TimmNamespace(), description="every timm model name, and hf-hub: names")


__all__ = ["TimmNamespace", "create_timm_backbone", "UnknownNameError"]
