"""The one resnas checkpoint container: written atomically, read with weights_only, tagged by kind.

Format: {'format': 'resnas-checkpoint', 'version': 1, 'kind': KIND, **entries}. Two kinds exist:

- 'model' (save_checkpoint / load_checkpoint): {'arch_spec': <ArchSpec JSON or None>, 'state_dict': {...},
  'extra': {json-able}}: weights with the ArchSpec beside them, so any file rebuilds without the code
  that produced it. Files written before the kind tag existed read as 'model'.
- 'supernet' (strategies.proxyless.search): the supernet's weights, gates, optimisers and sampler state.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.spec import ArchSpec

from .atomic import atomic_write_bytes
from .errors import CheckpointError

FORMAT = "resnas-checkpoint"
VERSION = 1
MODEL = "model"


def write_checkpoint(path: Path, kind: str, entries: dict[str, Any]) -> None:
    """Serialise to memory first, then replace `path` atomically: a full disk keeps the old file."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "kind": kind, **entries}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_checkpoint(path: Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint of `kind` without unpickling code (weights_only=True); refuse anything else clearly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; check the path or rerun the training that writes it.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, corrupt or foreign files all get one answer
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable resnas checkpoint ({reason}); delete it and rerun the training."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnas checkpoint; write it with trainers.save_checkpoint.")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}; this resnas reads {VERSION}.")
    if payload.get("kind", MODEL) != kind:
        raise CheckpointError(
            f"{path} is a resnas {payload.get('kind', MODEL)} checkpoint, not a {kind} one; pass the {kind} file."
        )
    return payload


def save_checkpoint(
    path: Path, model: nn.Module | dict, arch_spec: ArchSpec | str | None = None, extra: dict[str, Any] | None = None
) -> None:
    """Weights (a module or a state dict) with their ArchSpec: given, or the module's own `arch_spec`."""
    state_dict = model.state_dict() if isinstance(model, nn.Module) else model
    arch_spec = arch_spec if arch_spec is not None else getattr(model, "arch_spec", None)
    spec_json = arch_spec.to_json() if isinstance(arch_spec, ArchSpec) else arch_spec
    write_checkpoint(path, MODEL, {"arch_spec": spec_json, "state_dict": state_dict, "extra": extra or {}})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A model checkpoint's entries: arch_spec (JSON or None), state_dict, extra."""
    return read_checkpoint(path, MODEL)
