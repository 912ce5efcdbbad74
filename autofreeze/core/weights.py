"""Reading, loading and writing weight files, shared by every backbone plugin.

``.safetensors`` files are read with safetensors, anything else with ``torch.load(...,
weights_only=True)`` (no code runs from a checkpoint). Loading keeps the fresh head: only
classifier entries whose shape differs from the model's are skipped, anything else that does
not fit is an error naming the file.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autofreeze.errors import WeightsError

if TYPE_CHECKING:
    from torch import nn

# what torch.load(weights_only=True) names when it refuses a file
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def first_line(exc: BaseException | str) -> str:
    """The first line of an exception's message (for one-line errors)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host:port`` accepts a connection within ``timeout``, name lookup included."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a hung DNS lookup is abandoned
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def read_state_dict(path: Path) -> dict[str, Any]:
    """Read a ``.safetensors`` or a torch file (``weights_only=True``) into a state dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        refused = _UNSAFE_GLOBAL.search(str(exc))
        if refused:  # torch's own advice (weights_only=False) is one autofreeze never takes
            raise WeightsError(
                f"weights file {str(path)!r} holds a pickled {refused.group(1)}, which is not "
                "loaded: torch files are read with weights_only=True so that no code in them "
                "runs; save only the tensors, e.g. torch.save(model.state_dict(), 'w.pth') or "
                "as .safetensors"
            ) from None
        raise WeightsError(
            f"cannot read weights file {str(path)!r} ({first_line(exc)}); expected a "
            f".safetensors file or a torch state dict saved with torch.save"
        ) from None
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict(
    model: nn.Module,
    state: dict[str, Any],
    head_keys: Iterable[str],
    *,
    source: str,
    name: str,
    keep_head: bool = True,
) -> None:
    """Load ``state`` into ``model``, skipping only head entries whose shape differs.

    ``head_keys`` are the state-dict keys of the classifier. With ``keep_head=False`` they are
    always skipped (the classifier stays fresh). Anything else that does not fit raises
    ``WeightsError`` naming ``source`` and the backbone ``name``.
    """
    own = model.state_dict()
    head = set(head_keys)
    state = dict(state)
    for k in list(state):
        if k in head and k in own and (not keep_head or state[k].shape != own[k].shape):
            del state[k]  # another task's classifier: the fresh one is kept
    missing = [k for k in own if k not in state and k not in head]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} shape mismatches (e.g. {k!r}: file "
                f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
            )
        raise WeightsError(
            f"weights file {source!r} does not match backbone {name!r}: " + ", ".join(parts)
        )
    model.load_state_dict(state, strict=False)


def save_state(path: Path, model: nn.Module, metadata: dict[str, str]) -> Path:
    """Write a model's state dict as safetensors, atomically: readers never see half a file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path
