"""`resnas export`: an ArchSpec (+ weights) to a timm folder that `timm.create_model('local-dir:DIR')` loads.

    resnas export --spec arch.json --weights retrain.ckpt --out timm_export --input-size 3 32 32
    resnas export --top TRIAL_DIR --rank 2 --out rank2                # the supernet's weights for that path
    resnas export --top TRIAL_DIR --rank 2 --retrain --out rank2      # retrained, tested, then exported

--weights takes a resnas checkpoint (trainers.save_checkpoint) or a .safetensors state dict; without it the
export holds fresh weights. A checkpoint that carries its ArchSpec makes --spec optional, and a --spec that
disagrees with it is refused (search_spaces.export.choose_export_spec holds those rules).

--top takes a ProxylessNAS trial's output folder (or its top_architectures.json) and exports the architecture
of --rank (1 = the argmax, which the trial itself retrained and exported). Its weights are, in order: --retrain
(trained from scratch with the trial's settings, as the trial trains the argmax, then tested), --weights (a
checkpoint trained for that architecture), else the supernet's shared weights for that path, not retrained.
--dataset names the data for the model card and the class names (with --top, the trial's dataset is used).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .errors import UserError

HELP = "write a timm folder (config.json + model.safetensors + README.md) from an ArchSpec and weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=Path, help="an ArchSpec JSON (a trial's arch.json); optional with a checkpoint")
    parser.add_argument("--weights", type=Path, help="a resnas checkpoint or a .safetensors state dict")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (an earlier export is replaced)")
    parser.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="default: C 224 224")
    parser.add_argument("--mean", type=float, nargs="+", help="per-channel mean (default: ImageNet's)")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel std (default: ImageNet's)")
    parser.add_argument("--dataset", help="the dataset the weights were trained on (model card and class names)")
    parser.add_argument("--data-dir", type=Path, help="where that dataset is (image folders; with --top: instead "
                                                      "of the trial's data_dir)")
    parser.add_argument("--top", type=Path, help="a ProxylessNAS trial folder or its top_architectures.json")
    parser.add_argument("--rank", type=int, help="with --top: which of its architectures (1 = the argmax; default 1)")
    parser.add_argument("--retrain", action="store_true",
                        help="with --top: retrain that architecture from scratch with the trial's settings and test it")


def run(args: argparse.Namespace) -> int:
    if args.top is not None:
        return _export_top(args)
    if args.rank is not None or args.retrain:
        raise UserError("--rank and --retrain pick among a trial's top architectures; pass --top TRIAL_DIR with them.")
    return _export_given(args)


def _export_given(args: argparse.Namespace) -> int:
    from search_spaces.builder import build_model
    from search_spaces.export import choose_export_spec
    from search_spaces.model_card import ModelCard

    state_dict, stored, extra = _read_weights(args.weights) if args.weights else (None, None, {})
    stored_spec = _spec_of(stored) if stored is not None else None
    given_spec = _read_spec(args.spec) if args.spec else None
    spec = choose_export_spec(given_spec, stored_spec, state_dict, str(args.spec), str(args.weights))
    model = build_model(spec)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    card = ModelCard(dataset=args.dataset, label_names=_label_names(args.dataset, args.data_dir),
                     notes=(f"Weights: {args.weights or 'fresh (no --weights)'}.",))
    extra = {**extra, "weights": str(args.weights) if args.weights else "fresh (no --weights)"}
    _write(args, spec, model, card, extra, _given_data_config(args))
    return 0


def _export_top(args: argparse.Namespace) -> int:
    """One of a ProxylessNAS trial's top architectures, with retrained, given or supernet weights."""
    from dataclasses import replace

    from search_spaces.spec import ArchSpec

    from ..proxyless.settings import ProxylessSettings
    from ..settings import SettingsError, parse_settings

    if args.spec is not None:
        raise UserError("--top brings its own ArchSpecs; drop --spec (or drop --top to export that spec).")
    if args.retrain and args.weights is not None:
        raise UserError("--retrain trains new weights; drop --weights (or --retrain to export those weights).")
    record, file = _read_top(args.top)
    architectures = record["architectures"]
    rank = 1 if args.rank is None else args.rank
    if not 1 <= rank <= len(architectures):
        raise UserError(f"{file} lists ranks 1 to {len(architectures)}; pass --rank between them (the trial's "
                        f"top_k setting decides how many it keeps).")
    entry = architectures[rank - 1]
    try:
        settings = parse_settings(ProxylessSettings, record["settings"], str(file))
    except SettingsError as error:
        raise UserError(str(error)) from None
    if args.data_dir is not None:
        settings = replace(settings, data_dir=str(args.data_dir))
    if args.dataset is not None and args.dataset != settings.dataset:
        raise UserError(f"the trial ran on {settings.dataset}, not {args.dataset}; drop --dataset with --top.")
    spec = ArchSpec.from_dict(entry["arch_spec"])
    where = f"rank {rank} of the {len(architectures)} most probable architectures under the search's final gates"
    notes = [f"This is {where} (probability {entry['probability']:.4g}), from {file}."]
    if args.retrain:
        return _retrain_top(args, spec, settings, file.parent, rank, notes)
    model, weights = _top_weights(args, spec, record, entry, file, rank)
    notes.append(weights)
    from ..multi_trial.job_trial import data_card
    from ..proxyless.trial import proxyless_card

    card = data_card(settings, proxyless_card(settings, tuple(notes)))
    extra = {"weights": weights, "rank": rank, "probability": entry["probability"], "top_architectures": str(file)}
    _write(args, spec, model, card, extra, _trial_data_config(args, settings))
    return 0


def _top_weights(args: argparse.Namespace, spec, record: dict, entry: dict, file: Path, rank: int):
    """(model, a note on its weights): a given checkpoint's, else the supernet's for this path."""
    from search_spaces.builder import build_model
    from search_spaces.export import choose_export_spec
    from trainers.checkpoint import read_checkpoint

    from ..proxyless.search import SUPERNET
    from ..proxyless.top_k import path_state_dict

    model = build_model(spec)
    if args.weights is not None:
        state_dict, stored, _ = _read_weights(args.weights)
        stored_spec = _spec_of(stored) if stored is not None else None
        choose_export_spec(spec, stored_spec, state_dict, f"rank {rank} of {file}", str(args.weights))
        model.load_state_dict(state_dict, strict=True)
        return model, f"Weights: {args.weights}, trained for this architecture."
    supernet = file.parent / record["supernet"]
    state = read_checkpoint(supernet, SUPERNET)["model"]  # CheckpointError names a missing or corrupt file
    try:
        path = path_state_dict(state, record["gate_labels"], record["probabilities"], entry["sample"])
    except ValueError as error:
        raise UserError(f"{file}: {error}") from None
    choose_export_spec(spec, None, path, f"rank {rank} of {file}", f"the path's weights in {supernet}")
    model.load_state_dict(path, strict=True)
    return model, (f"Weights: the supernet's shared weights for this path ({supernet.name}), not retrained; its "
                   f"BatchNorm statistics were gathered over mixed paths, so retrain it (`resnas export --top "
                   f"... --rank {rank} --retrain`) before relying on it. Test accuracy was not measured.")


def _retrain_top(args: argparse.Namespace, spec, settings, trial_dir: Path, rank: int, notes: list[str]) -> int:
    """The trial's final step for another rank: train from scratch, test, export (with the trial's data config)."""
    import torch

    from ..data import make_job_datamodule
    from ..multi_trial.job_trial import test_and_export
    from ..proxyless.start import load_start
    from ..proxyless.trial import proxyless_card, retrain

    if args.mean or args.std or args.input_size:
        raise UserError("with --retrain the trial's settings decide mean, std and input size; drop --mean, --std "
                        "and --input-size.")
    torch.manual_seed(settings.seed)
    datamodule = make_job_datamodule(settings)  # DataError names missing files (see --data-dir)
    checkpoint = trial_dir / f"retrain_rank{rank}.ckpt"
    # A fine-tuned retrain starts from the trial's start network, which its card then names.
    start = load_start(settings, datamodule.info) if settings.retrain_from == "start" else None
    model, fitted = retrain(spec, settings, datamodule, checkpoint, start)
    how = "Fine-tuned from the start network" if start is not None else "Retrained from scratch"
    notes.append(f"{how} for {settings.retrain_epochs} epochs with the trial's settings by "
                 f"`resnas export --retrain` (checkpoint {checkpoint.name} in the trial folder).")
    card = proxyless_card(settings, tuple(notes), start_origin=start.origin if start is not None else None)
    try:
        tested = test_and_export(model, spec, datamodule, settings, trial_dir, card, export_dir=args.out)
    except OSError as error:
        raise UserError(f"cannot write {args.out} ({error.strerror or error}); pass a writable --out folder.") from None
    print(f"rank {rank}: val accuracy {fitted.final_val_accuracy:.4f}, test accuracy {tested['test_accuracy']:.4f} "
          f"on {tested['test_split']}")
    _print_loading(Path(tested["export_dir"]), spec, fresh=False)
    return 0


def _write(args: argparse.Namespace, spec, model, card, extra: dict[str, Any], data_config: dict[str, Any]) -> None:
    from search_spaces.export import export_to_timm

    try:
        folder = export_to_timm(spec, model.eval(), args.out, **data_config, extra=extra, card=card)
    except OSError as error:
        raise UserError(f"cannot write {args.out} ({error.strerror or error}); pass a writable --out folder.") from None
    _print_loading(folder, spec, fresh=args.weights is None and args.top is None)


def _print_loading(folder: Path, spec, fresh: bool) -> None:
    from search_spaces.export import ENTRY_POINT, timm_architecture

    needs = " after `import search_spaces.timm_entry`" if timm_architecture(spec)[0] == ENTRY_POINT else ""
    weights = " with fresh weights (no --weights)" if fresh else ""
    print(f"wrote {folder}{weights}; load it{needs} with timm.create_model('local-dir:{folder}', pretrained=True)")


def _given_data_config(args: argparse.Namespace) -> dict[str, Any]:
    return {"mean": tuple(args.mean) if args.mean else None, "std": tuple(args.std) if args.std else None,
            "input_size": tuple(args.input_size) if args.input_size else None}


def _trial_data_config(args: argparse.Namespace, settings) -> dict[str, Any]:
    """What the trial's network saw (its normalisation and input size), unless given on the command line."""
    from trainers.datasets import dataset_entry, normalization

    from ..data import input_size

    mean, std = normalization(dataset_entry(settings.dataset).info, settings.normalize)  # static: no folder read
    given = _given_data_config(args)
    return {"mean": given["mean"] or mean, "std": given["std"] or std,
            "input_size": given["input_size"] or input_size(settings)}


def _label_names(dataset: str | None, data_dir: Path | None) -> tuple[str, ...] | None:
    if dataset is None:
        return None
    from trainers.datasets import dataset_info

    return dataset_info(dataset, data_dir or "data").class_names or None  # DataError: unknown name, missing folder


def _read_top(path: Path) -> tuple[dict[str, Any], Path]:
    """(the record, its file) of a trial folder or a top_architectures.json."""
    from ..proxyless.top_k import TOP_ARCHITECTURES_FILE, TOP_ARCHITECTURES_FORMAT

    file = path / TOP_ARCHITECTURES_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file} does not exist; pass the output folder of a ProxylessNAS trial that searched a "
                        f"scope (the baseline searches none).")
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{file} cannot be read as JSON ({error}); pass the file a ProxylessNAS trial wrote.") from None
    keys = ("architectures", "settings", "supernet", "gate_labels", "probabilities")
    if not isinstance(record, dict) or record.get("format") != TOP_ARCHITECTURES_FORMAT or not all(
            key in record for key in keys):
        raise UserError(f"{file} is not a resnas top-architectures file; pass the one a ProxylessNAS trial wrote.")
    return record, file.resolve()


def _spec_of(stored: str | dict):
    from search_spaces.spec import ArchSpec

    return ArchSpec.from_json(stored) if isinstance(stored, str) else ArchSpec.from_dict(stored)


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
