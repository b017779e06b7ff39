"""The `resnas_net` timm entry point: any ArchSpec as a timm model, registered when `search_spaces` is imported.

    timm.create_model('resnas_net', arch_spec=spec_dict)                         # fresh weights
    timm.create_model('local-dir:EXPORT', pretrained=True)                        # an exported folder
    timm.create_model('local-dir:EXPORT', pretrained=True, num_classes=3)         # new head, rest loaded
    timm.create_model('local-dir:EXPORT', pretrained=True, features_only=True)    # stem + every stage
    timm.create_model('local-dir:EXPORT', pretrained=True, num_classes=0, global_pool='')  # unpooled maps

Built through timm's `build_model_with_cfg`, so pretrained loading, classifier replacement, input-channel
adaptation and the feature wrappers (`feature_cls='getter'` included) are timm's own; the model API itself
(forward_intermediates, gradient checkpointing, group_matcher, TorchScript) is ResNasNet's, builder.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model, resolve_pretrained_cfg

from .builder import ResNasNet, global_pool_layer
from .latency_table import network_parts
from .spec import ArchSpec

ENTRY_POINT = "resnas_net"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# timm's train/validate scripts pass these; anything else resnas cannot honour is an error, not ignored.
_ACCEPTED = ("drop_rate", "global_pool", "device", "dtype")


def resolve_arch_spec(arch_spec: ArchSpec | dict[str, Any] | str) -> ArchSpec:
    """An ArchSpec from an ArchSpec, its dict (what config.json holds) or its JSON text."""
    if isinstance(arch_spec, ArchSpec):
        return arch_spec
    if isinstance(arch_spec, str):
        return ArchSpec.from_json(arch_spec)
    return ArchSpec.from_dict(arch_spec)


def pool_size(spec: ArchSpec, input_size: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) of forward_features' output for images of `input_size` ((C,) H, W): timm's `pool_size` cfg key."""
    head = network_parts(spec, (spec.in_channels, *input_size[-2:]))[-1]  # the head reads the final features
    return head.in_shape[1], head.in_shape[2]


def _build_resnas_net(
    arch_spec: ArchSpec | dict[str, Any] | str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
) -> ResNasNet:
    """timm's `model_cls`: the spec, with timm's num_classes / in_chans / drop_rate taking precedence."""
    unknown = sorted(set(kwargs) - set(_ACCEPTED))
    if unknown:
        raise TypeError(
            f"resnas_net does not support {', '.join(unknown)}; it accepts num_classes, in_chans, "
            f"{', '.join(_ACCEPTED)}, features_only and out_indices."
        )
    global_pool = kwargs.get("global_pool", "avg")
    global_pool_layer(global_pool)  # "avg" or "" (unpooled); anything else raises naming those two
    spec = resolve_arch_spec(arch_spec)
    if in_chans is not None and in_chans != spec.in_channels:
        spec = replace(spec, in_channels=in_chans)
    head = spec.head
    if kwargs.get("drop_rate") is not None:
        head = replace(head, dropout=float(kwargs["drop_rate"]))
    # num_classes=0 is timm's idiom for "pooled features, no classifier": build a head, then remove it.
    if num_classes is not None and num_classes > 0:
        head = replace(head, num_classes=num_classes)
    spec = replace(spec, head=head)  # replace() re-validates through ArchSpec.__post_init__
    model = ResNasNet(spec)
    if num_classes == 0 or global_pool != "avg":
        model.reset_classifier(0 if num_classes == 0 else model.num_classes, global_pool)
    if kwargs.get("device") is not None or kwargs.get("dtype") is not None:
        model = model.to(device=kwargs.get("device"), dtype=kwargs.get("dtype"))
    return model


# register_model reads this module's `default_cfgs`; per-export values (mean, std, input size, classes)
# come from the exported config.json and replace these.
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


def resnas_net(pretrained: bool = False, **kwargs: Any) -> ResNasNet:
    """A ResNet-family network described by an ArchSpec (`arch_spec=`: ArchSpec, its dict or JSON)."""
    if "arch_spec" not in kwargs:
        raise TypeError("resnas_net needs arch_spec=<ArchSpec dict>; or load an exported folder with 'local-dir:DIR'.")
    spec = resolve_arch_spec(kwargs["arch_spec"])
    # timm's default feature indices are (0..4), five maps; a searched net has one per stage plus the stem.
    feature_cfg = dict(flatten_sequential=False, out_indices=tuple(range(len(spec.stages) + 1)))
    # timm's cfg contract includes pool_size, which depends on the network and the input size: exports write it
    # to config.json; otherwise (a fresh net, an older export) it is worked out at the cfg's input size.
    cfg = resolve_pretrained_cfg(ENTRY_POINT, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    if cfg.pool_size is None:
        kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}),
                                            "pool_size": pool_size(spec, cfg.input_size)}
    return build_model_with_cfg(_build_resnas_net, ENTRY_POINT, pretrained, feature_cfg=feature_cfg, **kwargs)


def register_resnas_net() -> None:
    """Register the entry point with timm once; importing or reloading resnas again is a no-op."""
    if not is_model(ENTRY_POINT):
        register_model(resnas_net)


register_resnas_net()

