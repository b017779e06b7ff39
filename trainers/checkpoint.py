"""The resnas checkpoint: weights with the ArchSpec beside them, written atomically, read with weights_only.

Format: {'format': 'resnas-checkpoint', 'version': 1, 'arch_spec': <ArchSpec JSON or None>,
         'state_dict': {...}, 'extra': {json-able}}
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write_bytes

FORMAT = "resnas-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the fix."""


def save_checkpoint(
    path: Path, model: nn.Module | dict, arch_spec: Any = None, extra: dict[str, Any] | None = None
) -> None:
    state_dict = model.state_dict() if isinstance(model, nn.Module) else model
    arch_spec = arch_spec if arch_spec is not None else getattr(model, "arch_spec", None)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch_spec": arch_spec.to_json() if hasattr(arch_spec, "to_json") else arch_spec,
        "state_dict": state_dict,
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling code (weights_only=True); refuse anything else clearly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; check the path or rerun the training that writes it.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, corrupt or foreign files all get one answer
        reason = str(error).splitlines()[0][:200]
        raise CheckpointError(
            f"{path} is not a readable resnas checkpoint ({reason}); delete it and rerun the training."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnas checkpoint; write it with trainers.save_checkpoint.")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}; this resnas reads {VERSION}.")
    return payload
