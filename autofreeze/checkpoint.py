"""Checkpoints of trained plans: a ``.safetensors`` file plus a JSON sidecar that describes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autofreeze.backbones import Backbone
from autofreeze.errors import WeightsError


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(path: Path, backbone: Backbone, info: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    save_file(state, str(path), metadata={"backbone": backbone.name})
    sidecar_path(path).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return path


def read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(Path(path))
    if not side.is_file():
        raise WeightsError(
            f"checkpoint sidecar {str(side)!r} not found (written by `autofreeze train`)"
        )
    return json.loads(side.read_text())


def load_checkpoint(path: Path) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild the trained backbone of a checkpoint with its sidecar's description."""
    from autofreeze.registry import get_registry

    info = read_sidecar(path)
    backbone = get_registry().create_backbone(
        info["backbone"],
        num_classes=len(info["classes"]),
        weights=str(path),
        granularity=info.get("granularity", "block"),
    )
    backbone.model.eval()
    return backbone, info
