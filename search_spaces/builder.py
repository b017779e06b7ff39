"""build_model(spec): an ArchSpec to a torch module with timm's ResNet names and interface."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import build_block, conv2d, make_activation
from .spec import ArchSpec

POOL_LAYERS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def init_resnet_weights(model: nn.Module, zero_init_last: bool = True) -> None:
    """timm's ResNet scheme, so a fresh net (or a searched path) trains like a fresh timm net."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_last:  # residual blocks start as the identity
        for module in model.modules():
            if module is not model and hasattr(module, "zero_init_last"):
                module.zero_init_last()


class Stage(nn.Sequential):
    """`layerN`: an optional pooling layer named `pool`, then blocks named 0, 1, ... (as in timm)."""

    def __init__(self, pool: str, blocks: list[nn.Module]):
        super().__init__()
        if pool != "none":
            self.add_module("pool", POOL_LAYERS[pool](kernel_size=2, stride=2))
        for index, block in enumerate(blocks):
            self.add_module(str(index), block)


# ---- the parts every ResNet-layout module shares: this builder and the NNI spaces (same names, same order) ----
def add_stem(net: nn.Module, spec: ArchSpec) -> None:
    """conv1 - bn1 - act1 - maxpool (an Identity without the max pool), timm's names."""
    stem = spec.stem
    net.conv1 = conv2d(spec.in_channels, stem.out_channels, stem.kernel_size, stem.stride)
    net.bn1 = nn.BatchNorm2d(stem.out_channels)
    net.act1 = make_activation(stem.activation)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem.max_pool else nn.Identity()


def add_head(net: nn.Module, spec: ArchSpec) -> None:
    """global_pool - head_drop - fc."""
    net.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    net.head_drop = nn.Dropout(spec.head.dropout)
    net.fc = nn.Linear(spec.num_features, spec.head.num_classes)


def forward_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stem, then the stages named in `net.stage_names`."""
    x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
    for name in net.stage_names:
        x = getattr(net, name)(x)
    return x


def forward_head(net: nn.Module, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    x = net.head_drop(net.global_pool(x))
    return x if pre_logits else net.fc(x)


class ResNasNet(nn.Module):
    """A ResNet-family network built from an ArchSpec.

    Top-level children run in forward order (conv1, bn1, act1, maxpool, layer1.., global_pool, head_drop, fc),
    which timm's feature extraction wrappers rely on.
    """

    def __init__(self, spec: ArchSpec, zero_init_last: bool = True):
        super().__init__()
        self.arch_spec = spec
        self.num_classes = spec.head.num_classes
        self.num_features = spec.num_features
        stem = spec.stem
        add_stem(self, spec)

        reduction = stem.stride * (2 if stem.max_pool else 1)
        self.feature_info = [dict(num_chs=stem.out_channels, reduction=stem.stride, module="act1")]
        channels = stem.out_channels
        for stage_index, stage in enumerate(spec.stages, start=1):
            blocks = []
            if stage.pool != "none":
                reduction *= 2
            for block in stage.blocks:
                blocks.append(build_block(block, channels))
                channels = block.out_channels
                reduction *= block.stride
            self.add_module(f"layer{stage_index}", Stage(stage.pool, blocks))
            self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=f"layer{stage_index}"))
        self.stage_names = [f"layer{index}" for index in range(1, len(spec.stages) + 1)]

        add_head(self, spec)
        init_resnet_weights(self, zero_init_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return forward_features(self, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return forward_head(self, x, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def build_model(spec: ArchSpec, zero_init_last: bool = True) -> ResNasNet:
    """Build the network an ArchSpec describes (freshly initialised)."""
    return ResNasNet(spec, zero_init_last=zero_init_last)
