"""`resnas export`: an ArchSpec (+ weights) to a timm folder that `timm.create_model('local-dir:DIR')` loads.

    resnas export --spec arch.json --weights retrain.ckpt --out timm_export --input-size 3 32 32

--weights takes a resnas checkpoint (trainers.save_checkpoint) or a .safetensors state dict; without it the
export holds fresh weights. A checkpoint that carries its ArchSpec makes --spec optional, and a --spec that
disagrees with it is refused (search_spaces.export.choose_export_spec holds those rules).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import UserError

HELP = "write a timm folder (config.json + model.safetensors) from an ArchSpec and weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=Path, help="an ArchSpec JSON (a trial's arch.json); optional with a checkpoint")
    parser.add_argument("--weights", type=Path, help="a resnas checkpoint or a .safetensors state dict")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (an earlier export is replaced)")
    parser.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="default: C 224 224")
    parser.add_argument("--mean", type=float, nargs="+", help="per-channel mean (default: ImageNet's)")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel std (default: ImageNet's)")


def run(args: argparse.Namespace) -> int:
    from search_spaces.builder import build_model
    from search_spaces.export import ENTRY_POINT, choose_export_spec, export_to_timm, timm_architecture
    from search_spaces.spec import ArchSpec

    state_dict, stored, extra = _read_weights(args.weights) if args.weights else (None, None, {})
    stored_spec = None
    if stored is not None:
        stored_spec = ArchSpec.from_json(stored) if isinstance(stored, str) else ArchSpec.from_dict(stored)
    given_spec = _read_spec(args.spec) if args.spec else None
    spec = choose_export_spec(given_spec, stored_spec, state_dict, str(args.spec), str(args.weights))
    model = build_model(spec)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    try:
        folder = export_to_timm(
            spec, model.eval(), args.out,
            mean=tuple(args.mean) if args.mean else None,
            std=tuple(args.std) if args.std else None,
            input_size=tuple(args.input_size) if args.input_size else None,
            extra={**extra, "weights": str(args.weights) if args.weights else "fresh (no --weights)"},
        )
    except OSError as error:
        raise UserError(f"cannot write {args.out} ({error.strerror or error}); pass a writable --out folder.") from None
    needs = " after `import search_spaces.timm_entry`" if timm_architecture(spec)[0] == ENTRY_POINT else ""
    fresh = " with fresh weights (no --weights)" if args.weights is None else ""
    print(f"wrote {folder}{fresh}; load it{needs} with timm.create_model('local-dir:{folder}', pretrained=True)")
    return 0


def _read_spec(path: Path):
    from search_spaces.spec import ArchSpec

    if not path.is_file():
        raise UserError(f"{path} does not exist; pass the arch.json a trial wrote (or a checkpoint that carries it).")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} cannot be read as text ({error}); pass an ArchSpec JSON file.") from None
    return ArchSpec.from_json(text)  # SpecError: one sentence naming the fix


def _read_weights(path: Path) -> tuple[dict[str, Any], str | dict | None, dict[str, Any]]:
    """(state_dict, ArchSpec JSON or None, extra) from a .safetensors file or a resnas checkpoint."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass a checkpoint written by resnas or a .safetensors file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), None, {}
        except Exception as error:  # noqa: BLE001 - truncated, corrupt or foreign files get one answer
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise UserError(f"{path} is not a readable safetensors file ({reason}); pass a complete one.") from None
    from trainers.checkpoint import load_checkpoint

    payload = load_checkpoint(path)  # torch.load(weights_only=True); CheckpointError names the fix
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise UserError(f"{path} holds no state_dict; pass a checkpoint written by trainers.save_checkpoint.")
    extra = payload.get("extra") if isinstance(payload.get("extra"), dict) else {}
    arch_spec = payload.get("arch_spec")
    return state_dict, arch_spec if isinstance(arch_spec, (str, dict)) else None, extra
