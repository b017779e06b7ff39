"""Export to a timm folder that `timm.create_model('local-dir:DIR', pretrained=True)` loads.

    DIR/config.json         timm's layout (as save_for_hf writes it): architecture, num_classes, num_features,
                            global_pool, model_args, pretrained_cfg (mean, std, input_size, num_classes,
                            first_conv, classifier, crop_pct, interpolation, ...)
    DIR/model.safetensors   the state dict (never a pickle)
    DIR/arch_spec.json      the ArchSpec, so the folder rebuilds without the code that produced it
    DIR/resnas.json         `extra` (metrics), `provenance` (code and library versions, settings digest, seed)
                            and `card` (the ModelCard facts), see model_card.py
    DIR/README.md           a Hugging Face Hub model card (library_name: timm), see model_card.py

A plain ResNet (what timm's own ResNet builds) is exported under timm's name with `layers=[...]`, so bare
timm loads it in a process that never imported resnas. Anything else (mixed kernels or activations, CIFAR
stems, pooling stages, uneven widths, dropout) uses the `resnas_net` entry point with the ArchSpec in
`model_args`; `import search_spaces.timm_entry` registers it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from .cost import measure_cost
from .errors import ExportError
from .model_card import ModelCard, provenance, render_card
from .spec import RESNET_LAYOUTS, STEMS, ArchSpec, SpecError, resnet_spec
from .timm_entry import ENTRY_POINT, IMAGENET_MEAN, IMAGENET_STD, pool_size

CONFIG_FILE, WEIGHTS_FILE, SPEC_FILE, EXTRA_FILE = "config.json", "model.safetensors", "arch_spec.json", "resnas.json"
CARD_FILE = "README.md"
EXPORT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, SPEC_FILE, EXTRA_FILE, CARD_FILE})


def plain_timm_resnet(spec: ArchSpec) -> tuple[str, dict[str, Any]] | None:
    """(timm architecture, model_args) when timm's own ResNet builds exactly this spec, else None.

    Plain means: ImageNet stem (7x7/2 + maxpool), four stages of torchvision blocks with widths 64*2^i,
    kernel 3, ReLU, the stride on each stage's first block after the first stage, no pooling stages, no
    dropout; any number (>= 1) of blocks per stage.
    """
    blocks = [block for _, _, block in spec.iter_blocks()]
    if not blocks or blocks[0].kind not in ("basic", "bottleneck"):
        return None
    if spec.stem != STEMS["imagenet"] or len(spec.stages) != 4 or 0 in spec.depths:
        return None
    family_depth = 18 if blocks[0].kind == "basic" else 50
    # Equality with the standard spec of the same depths covers widths, kernels, activations, strides,
    # projections, pools and dropout in one comparison.
    standard = resnet_spec(
        family_depth, num_classes=spec.head.num_classes, in_channels=spec.in_channels, stage_depths=spec.depths
    )
    if standard != spec:
        return None
    # Name the standard depth when it is one (resnet34, resnet101, ...); model_args rebuild any other.
    named = [depth for depth, layout in RESNET_LAYOUTS.items() if layout == (blocks[0].kind, spec.depths)]
    architecture = f"resnet{named[0] if named else family_depth}"
    return architecture, {"layers": list(spec.depths), "in_chans": spec.in_channels}


def timm_architecture(spec: ArchSpec) -> tuple[str, dict[str, Any]]:
    """(architecture, model_args) for config.json: timm's ResNet when it can build the spec, else resnas_net."""
    return plain_timm_resnet(spec) or (
        ENTRY_POINT, {"arch_spec": json.loads(spec.to_json()), "in_chans": spec.in_channels}
    )


def export_to_timm(
    spec: ArchSpec,
    model: nn.Module,
    out_dir: str | Path,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_size: tuple[int, int, int] | None = None,
    extra: dict[str, Any] | None = None,
    card: ModelCard | None = None,
) -> Path:
    """Write the timm folder for `model` (built from `spec`); returns its path.

    mean/std default to ImageNet's for 3 channels (0.5 otherwise); input_size to (C, 224, 224). `card` holds
    what the weights cannot tell (accuracy, data, method, seed, class names) for README.md, resnas.json and
    pretrained_cfg's label_names. The folder appears complete or not at all: it is written beside `out_dir`
    and renamed into place, replacing an earlier export there (never a folder holding anything else).
    """
    out_dir = Path(out_dir).expanduser().resolve()  # absolute: `local-dir:` paths are read relative to the cwd
    if isinstance(getattr(model, "arch_spec", None), ArchSpec) and model.arch_spec != spec:
        raise ExportError("the model was built from a different ArchSpec than the one given; pass model.arch_spec.")
    architecture, model_args = timm_architecture(spec)
    state_dict = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    check_weights(_expected_state(architecture, model_args, spec), state_dict)
    card = card or ModelCard()
    config = _timm_config(spec, architecture, model_args, *_data_config(spec, mean, std, input_size))
    if card.label_names is not None:
        if len(card.label_names) != spec.head.num_classes:
            raise ExportError(f"{len(card.label_names)} label names for {spec.head.num_classes} classes; give one "
                              f"name per class, in class-index order.")
        config["pretrained_cfg"]["label_names"] = [str(name) for name in card.label_names]
    _check_replaceable(out_dir)
    cost = measure_cost(spec, input_size=tuple(config["pretrained_cfg"]["input_size"]))
    origin = provenance(card)
    record = {**(extra or {}), "provenance": origin, "card": card.to_dict()}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        save_file(state_dict, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (staging / SPEC_FILE).write_text(spec.to_json() + "\n")
        (staging / EXTRA_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        (staging / CARD_FILE).write_text(render_card(out_dir, spec, config, card, cost.params, cost.macs, origin))
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def load_exported(folder: str | Path) -> tuple[ArchSpec, nn.Module]:
    """(ArchSpec, timm model with the exported weights, in eval mode) of an export folder."""
    folder = Path(folder).resolve()
    if not (folder / SPEC_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise ExportError(
            f"{folder} is not a resnas export (no {SPEC_FILE} or {CONFIG_FILE}); pass the folder export_to_timm wrote."
        )
    spec = ArchSpec.from_json((folder / SPEC_FILE).read_text())
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    return spec, model.eval()


def weights_mismatch(expected: dict[str, torch.Size], state_dict: dict[str, torch.Tensor]) -> str | None:
    """None when `state_dict` has exactly the expected names and shapes, else what differs first (a phrase)."""
    wrong_shape = [name for name in expected if name in state_dict and state_dict[name].shape != expected[name]]
    if wrong_shape:
        name = wrong_shape[0]
        return f"{name} has shape {tuple(state_dict[name].shape)}, the spec needs {tuple(expected[name])}"
    missing = [name for name in expected if name not in state_dict]
    if missing:
        return f"{len(missing)} tensors the spec needs are missing, e.g. {missing[0]}"
    unexpected = [name for name in state_dict if name not in expected]
    if unexpected:
        return f"{len(unexpected)} tensors are not in the spec, e.g. {unexpected[0]}"
    return None


def choose_export_spec(
    given: ArchSpec | None,
    stored: ArchSpec | None,
    state_dict: dict[str, torch.Tensor] | None,
    given_name: str = "the given spec",
    weights_name: str = "the weights",
) -> ArchSpec:
    """The spec to export weights under: `given` (a user's spec file), else `stored` (the one saved with them).

    A given spec that differs from the stored one is refused even when the shapes agree: same-shaped weights
    under another activation would export a different function. The names only word the errors.
    """
    spec = given or stored
    if spec is None:
        raise ExportError("no architecture given; pass --spec with the ArchSpec JSON the weights were trained with.")
    if state_dict is not None:
        detail = weights_mismatch(expected_weights(spec), state_dict)
        if detail is not None:
            both = given is not None and stored is not None
            fix = "omit --spec to use the one stored in the checkpoint" if both else "pass the spec it was trained with"
            target = given_name if given is not None else "its stored ArchSpec"
            raise ExportError(f"{weights_name} does not match {target} ({detail}); {fix}.")
    if stored is not None and spec != stored:
        raise ExportError(f"{given_name} differs from the ArchSpec stored in {weights_name}; omit --spec to use the stored one.")
    return spec


def check_weights(expected: dict[str, torch.Size], state_dict: dict[str, torch.Tensor]) -> None:
    """Raise ExportError naming the first mis-shaped, missing or unexpected tensor."""
    detail = weights_mismatch(expected, state_dict)
    if detail is not None:
        raise ExportError(f"the weights do not match the spec ({detail}); pass the spec they were trained with.")


def expected_weights(spec: ArchSpec) -> dict[str, torch.Size]:
    """Names and shapes of the state dict `spec`'s network has (built on the meta device: no memory, no init)."""
    architecture, model_args = timm_architecture(spec)
    return _expected_state(architecture, model_args, spec)


def _expected_state(architecture: str, model_args: dict[str, Any], spec: ArchSpec) -> dict[str, torch.Size]:
    # The twin timm itself builds from this config: what `local-dir:` will load the weights into.
    with torch.device("meta"):
        arguments = {**model_args, "in_chans": spec.in_channels, "num_classes": spec.head.num_classes}
        twin = timm.create_model(architecture, pretrained=False, **arguments)
    return {name: tensor.shape for name, tensor in twin.state_dict().items()}


def _data_config(
    spec: ArchSpec,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    input_size: tuple[int, int, int] | None,
) -> tuple[list[float], list[float], list[int]]:
    channels = spec.in_channels
    imagenet = channels == 3
    mean = list(mean) if mean is not None else list(IMAGENET_MEAN if imagenet else (0.5,) * channels)
    std = list(std) if std is not None else list(IMAGENET_STD if imagenet else (0.5,) * channels)
    size = list(input_size) if input_size is not None else [channels, 224, 224]
    if len(size) != 3 or size[0] != channels or min(size) < 1:
        raise SpecError(f"input_size {tuple(size)} must be ({channels}, H, W) for this {channels}-channel spec.")
    if len(mean) != channels or len(std) != channels:
        raise SpecError(
            f"mean and std need {channels} values each (one per input channel), got {len(mean)} and {len(std)}."
        )
    if min(std) <= 0:
        raise SpecError(f"std {tuple(std)} must be positive; pass the dataset's per-channel standard deviation.")
    return [float(v) for v in mean], [float(v) for v in std], [int(v) for v in size]


def _timm_config(
    spec: ArchSpec, architecture: str, model_args: dict[str, Any], mean: list, std: list, input_size: list
) -> dict[str, Any]:
    """config.json as timm.models.save_for_hf writes it, pinned to what resnas knows about these weights."""
    return {
        "architecture": architecture,
        "num_classes": spec.head.num_classes,
        "num_features": spec.num_features,
        "global_pool": "avg",
        "model_args": model_args,
        "pretrained_cfg": {
            "num_classes": spec.head.num_classes,
            "input_size": input_size,
            "pool_size": pool_size(spec, input_size),
            "mean": mean,
            "std": std,
            "crop_pct": 1.0,  # resnas evaluates on the resized image, no centre crop
            "interpolation": "bilinear",
            "first_conv": "conv1",
            "classifier": "fc",
            "fixed_input_size": False,
            "custom_load": False,
        },
    }


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; pass a folder path for the export.")
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)
    if others:
        raise ExportError(
            f"{out_dir} holds files that are not an export (e.g. {others[0]}); pass a new or empty folder."
        )


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished folder to out_dir; an earlier export is moved aside first and restored on failure."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    previous = staging.with_name(staging.name.replace(".partial-", ".previous-"))
    out_dir.rename(previous)
    try:
        staging.rename(out_dir)
    except BaseException:
        previous.rename(out_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)


__all__ = [
    "ENTRY_POINT",
    "ExportError",
    "ModelCard",
    "check_weights",
    "expected_weights",
    "export_to_timm",
    "load_exported",
    "plain_timm_resnet",
    "timm_architecture",
    "weights_mismatch",
]
