"""Export to a timm folder (config.json + model.safetensors + arch_spec.json) that
`timm.create_model('local-dir:DIR', pretrained=True)` loads.

A plain ResNet (what timm's own ResNet can build) is exported under timm's name ('resnet18' family for basic
blocks, 'resnet50' family for bottlenecks) with `layers=[...]`, so bare timm loads it without resnas. Anything
else (mixed kernels or activations, CIFAR stems, pooling stages, uneven widths) uses the `resnas_net` entry
point, registered in timm when `search_spaces` is imported, with the ArchSpec in `model_args`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import timm
from timm.models import build_model_with_cfg, register_model
from timm.models._registry import _model_entrypoints, generate_default_cfgs
from torch import nn

from .builder import ResNasNet
from .spec import STEMS, ArchSpec, resnet_spec

ENTRY_POINT = "resnas_net"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _resnas_model(arch_spec: dict, num_classes: int | None = None, in_chans: int | None = None, **_) -> ResNasNet:
    """timm's `model_cls` for resnas_net: num_classes/in_chans from timm override the spec's."""
    spec = ArchSpec.from_dict(arch_spec)
    if num_classes is not None and num_classes != spec.head.num_classes:
        spec = ArchSpec.from_dict({**spec.to_dict(), "head": {**spec.to_dict()["head"], "num_classes": num_classes}})
    if in_chans is not None and in_chans != spec.in_channels:
        spec = ArchSpec.from_dict({**spec.to_dict(), "in_channels": in_chans})
    return ResNasNet(spec)


# timm's register_model reads the module's `default_cfgs`, so it is defined before the entry point.
default_cfgs = generate_default_cfgs(
    {
        ENTRY_POINT: {
            "url": "",
            "num_classes": 1000,
            "input_size": (3, 224, 224),
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "first_conv": "conv1",
            "classifier": "fc",
        }
    }
)

if ENTRY_POINT not in _model_entrypoints:  # importing twice must not re-register

    @register_model
    def resnas_net(pretrained: bool = False, **kwargs: Any) -> ResNasNet:
        """A ResNet-family network described by an ArchSpec (`arch_spec=` dict), built by resnas."""
        if "arch_spec" not in kwargs:
            raise ValueError("resnas_net needs arch_spec=<ArchSpec dict>; load an exported folder with local-dir:.")
        return build_model_with_cfg(
            _resnas_model, ENTRY_POINT, pretrained, feature_cfg=dict(flatten_sequential=False), **kwargs
        )


def plain_timm_resnet(spec: ArchSpec) -> tuple[str, dict] | None:
    """(timm architecture, model_args) when timm's own ResNet builds exactly this spec, else None."""
    first_block = next((block for _, _, block in spec.iter_blocks()), None)
    if first_block is None or first_block.kind not in ("basic", "bottleneck"):
        return None
    depth = 18 if first_block.kind == "basic" else 50
    if spec.stem != STEMS["imagenet"] or spec.head.dropout or len(spec.stages) != 4 or 0 in spec.depths:
        return None
    standard = resnet_spec(
        depth, num_classes=spec.head.num_classes, in_channels=spec.in_channels, stage_depths=spec.depths
    )
    if standard != spec:
        return None
    return f"resnet{depth}", {"layers": list(spec.depths), "in_chans": spec.in_channels}


def timm_model_for(spec: ArchSpec) -> tuple[nn.Module, dict]:
    """The timm-created twin of `spec` (fresh weights) and the model_args that rebuild it."""
    plain = plain_timm_resnet(spec)
    if plain is not None:
        architecture, model_args = plain
        model = timm.create_model(architecture, pretrained=False, num_classes=spec.head.num_classes, **model_args)
        return model, model_args
    model_args = {"arch_spec": spec.to_dict()}
    model = timm.create_model(
        ENTRY_POINT, pretrained=False, num_classes=spec.head.num_classes, in_chans=spec.in_channels, **model_args
    )
    return model, model_args


def export_to_timm(
    spec: ArchSpec,
    model: nn.Module,
    out_dir: str | Path,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_size: tuple[int, int, int] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the folder; it replaces `out_dir` only once complete (a crash leaves no half export)."""
    out_dir = Path(out_dir)
    twin, model_args = timm_model_for(spec)
    twin.load_state_dict(model.state_dict(), strict=True)
    channels = spec.in_channels
    pretrained_cfg = {
        "mean": tuple(mean or (IMAGENET_MEAN if channels == 3 else (0.5,) * channels)),
        "std": tuple(std or (IMAGENET_STD if channels == 3 else (0.5,) * channels)),
        "input_size": tuple(input_size or (channels, 224, 224)),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        timm.models.save_for_hf(
            twin.cpu(), str(staging), model_config={"pretrained_cfg": pretrained_cfg}, model_args=model_args,
            safe_serialization=True,
        )
        # timm may record defaults it derived; pin what resnas knows about the training data.
        config = json.loads((staging / "config.json").read_text())
        # Keep only what describes these weights; timm copies its ImageNet recipe's tag, test size and paper ids.
        config["pretrained_cfg"] = {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in pretrained_cfg.items()},
            "num_classes": spec.head.num_classes,
            "first_conv": "conv1",
            "classifier": "fc",
            "fixed_input_size": False,
            "custom_load": False,
        }
        config["model_args"] = model_args
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "arch_spec.json").write_text(spec.to_json())
        if extra:
            (staging / "resnas.json").write_text(json.dumps(extra, indent=2, default=str))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def load_exported(folder: str | Path) -> tuple[ArchSpec, nn.Module]:
    """(ArchSpec, timm model with the exported weights, eval mode) of an export folder."""
    folder = Path(folder)
    spec = ArchSpec.from_json((folder / "arch_spec.json").read_text())
    model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True)
    return spec, model.eval()
