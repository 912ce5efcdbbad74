"""Weights for torchvision backbones: torchvision's DEFAULT weights or a local file.

DEFAULT weights are read from the torch hub cache (``torch.hub.get_dir()/checkpoints``), where
torchvision keeps what it downloads. When the file is not cached the download host is probed
first, so an offline machine fails at once with a one-line ``WeightsError`` instead of waiting on
the network. Local files are read by autofreeze's own reader (``.safetensors`` or torch files).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from autofreeze.hookspecs import WeightsError, reachable, read_state_dict
from autofreeze.hookspecs import first_line as _first_line
from autofreeze.hookspecs import load_state_dict as _load

if TYPE_CHECKING:
    from torch import nn


# old DenseNet checkpoints (torchvision's own included) name layers 'norm.1' for 'norm1'
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def default_weights(arch: str) -> Any:
    """torchvision's DEFAULT weights enum member of ``arch``."""
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT


def cached_file(url: str) -> Path:
    """Where torchvision (``torch.hub.load_state_dict_from_url``) keeps the file of ``url``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def default_state_dict(name: str, arch: str) -> tuple[dict[str, Any], Path]:
    """The DEFAULT weights of ``arch`` and their file: from the hub cache, else downloaded if
    the host answers."""
    import torch.hub

    url = default_weights(arch).url
    cached = cached_file(url)
    if cached.is_file():
        return read_state_dict(cached), cached
    parts = urlparse(url)
    host = parts.hostname or url
    fix = (
        f'; pass a local file instead: weights = "/path/to/{cached.name}" in [backbone] '
        f"(or --weights PATH), or put that file into {cached.parent}"
    )
    if not reachable(host, parts.port or (80 if parts.scheme == "http" else 443)):
        raise WeightsError(
            f"cannot get the default weights of {name!r} ({host} is unreachable and "
            f"{cached.name} is not cached){fix}"
        )
    digest = torch.hub.HASH_REGEX.search(cached.name)  # torchvision's files carry a hash prefix
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            url, str(cached), hash_prefix=digest[1] if digest else None, progress=False
        )
    except Exception as exc:  # network errors come in many types (urllib, ssl, hash, disk)
        raise WeightsError(
            f"cannot get the default weights of {name!r} ({_first_line(exc)}){fix}"
        ) from None
    return read_state_dict(cached), cached


def load_state_dict(
    model: nn.Module,
    state: dict[str, Any],
    head_prefixes: Sequence[str],
    *,
    source: str,
    name: str,
    keep_head: bool = True,
) -> None:
    """autofreeze's loader, after renaming old DenseNet keys (``norm.1`` -> ``norm1``)."""
    state = {_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    head = [
        k for k in model.state_dict() if any(k == p or k.startswith(p + ".") for p in head_prefixes)
    ]
    _load(model, state, head, source=source, name=name, keep_head=keep_head)
