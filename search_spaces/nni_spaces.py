"""NNI model spaces over the ResNet family, each with `to_spec(sample) -> ArchSpec`.

NNI's magic (ModelSpace, LayerChoice, Repeat) stays in this file: the rest of resnas sees ArchSpecs.
Labels are named by position without dots ("layer3_2_kernel"): NNI's DARTS registers labels as parameter
names and refuses a dot.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat
from torch import nn

from .blocks import BasicBlock, Bottleneck, conv2d, make_activation
from .builder import Stage
from .spec import ArchSpec, SpecError, StageSpec, resnet_spec

# scope -> the stages (1-based) whose blocks are searched, counted from the deepest (the paper's s/m/l/f).
SCOPES: dict[str, tuple[int, ...]] = {"s": (4,), "m": (3, 4), "l": (2, 3, 4), "f": (1, 2, 3, 4)}


def _kernel_name(kernel_size: int) -> str:
    return f"k{kernel_size}"


def _add_stem(space: nn.Module, spec: ArchSpec) -> None:
    stem = spec.stem
    space.conv1 = conv2d(spec.in_channels, stem.out_channels, stem.kernel_size, stem.stride)
    space.bn1 = nn.BatchNorm2d(stem.out_channels)
    space.act1 = make_activation(stem.activation)
    space.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem.max_pool else nn.Identity()


def _add_head(space: nn.Module, spec: ArchSpec) -> None:
    space.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    space.fc = nn.Linear(spec.num_features, spec.head.num_classes)


def _forward(space: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = space.maxpool(space.act1(space.bn1(space.conv1(x))))
    for name in space.stage_names:
        x = getattr(space, name)(x)
    return space.fc(space.global_pool(x))


def _init_like_builder(space: nn.Module) -> None:
    for module in space.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in space.modules():
        if isinstance(module, Bottleneck):
            nn.init.zeros_(module.bn3.weight)


class ScopedResNet50(ModelSpace):
    """ResNet-50 whose bottlenecks inside `scope` choose their middle-conv kernel and their activation.

    Each searched block carries two decisions: `layerS_B_kernel` (LayerChoice at `layerS.B.conv2`, candidates
    "k3", "k5", ...) and `layerS_B_act` (the LayerChoices at act1/act2/act3 share it: one activation per block,
    the paper's "activation following the convolutions").
    """

    def __init__(
        self,
        scope: str,
        kernels: tuple[int, ...] = (3, 5),
        activations: tuple[str, ...] = ("relu", "leaky_relu", "mish"),
        num_classes: int = 10,
        stem: str = "imagenet",
        width_multiplier: float = 1.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if scope not in SCOPES:
            raise SpecError(f"unknown search scope {scope!r}; use one of {', '.join(SCOPES)} (small to full).")
        self.scope = scope
        self.kernels = tuple(kernels)
        self.activations = tuple(activations)
        self.base_spec = resnet_spec(
            50, num_classes=num_classes, stem=stem, width_multiplier=width_multiplier, in_channels=in_channels
        )
        _add_stem(self, self.base_spec)
        channels = self.base_spec.stem.out_channels
        self.stage_names = []
        for stage_index, stage in enumerate(self.base_spec.stages, start=1):
            blocks = []
            for block_index, block in enumerate(stage.blocks):
                module = Bottleneck(channels, block.widths, 3, block.stride, "relu", block.projection)
                if stage_index in SCOPES[scope]:
                    self._make_searchable(module, block, f"layer{stage_index}_{block_index}")
                blocks.append(module)
                channels = block.out_channels
            self.add_module(f"layer{stage_index}", Stage(stage.pool, blocks))
            self.stage_names.append(f"layer{stage_index}")
        _add_head(self, self.base_spec)
        _init_like_builder(self)

    def _make_searchable(self, module: Bottleneck, block, prefix: str) -> None:
        module.conv2 = LayerChoice(
            {_kernel_name(k): conv2d(block.widths[0], block.widths[1], k, block.stride) for k in self.kernels},
            label=f"{prefix}_kernel",
        )
        for site in ("act1", "act2", "act3"):
            setattr(
                module,
                site,
                LayerChoice({name: make_activation(name) for name in self.activations}, label=f"{prefix}_act"),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(self, x)

    def choice_labels(self) -> list[tuple[str, list]]:
        """(label, candidate values) of every decision, in forward order."""
        labels = []
        for stage_index, stage in enumerate(self.base_spec.stages, start=1):
            if stage_index not in SCOPES[self.scope]:
                continue
            for block_index in range(len(stage.blocks)):
                prefix = f"layer{stage_index}_{block_index}"
                labels.append((f"{prefix}_kernel", [_kernel_name(k) for k in self.kernels]))
                labels.append((f"{prefix}_act", list(self.activations)))
        return labels

    def to_spec(self, sample: dict) -> ArchSpec:
        """The ArchSpec of the path `sample` (label -> candidate name) picks."""
        spec = self.base_spec
        for label, _ in self.choice_labels():
            if label not in sample:
                raise SpecError(f"the sample has no value for {label!r}; sample every label of choice_labels().")
        for stage_index, block_index, block in list(spec.iter_blocks()):
            prefix = f"layer{stage_index}_{block_index}"
            if f"{prefix}_kernel" not in sample:
                continue
            kernel = str(sample[f"{prefix}_kernel"])
            activation = str(sample[f"{prefix}_act"])
            if kernel not in [_kernel_name(k) for k in self.kernels] or activation not in self.activations:
                raise SpecError(f"{prefix}: {kernel!r}/{activation!r} is not a candidate of this space.")
            block = replace(block, kernel_size=int(kernel[1:]), activation=activation)
            spec = spec.replace_block(stage_index, block_index, block)
        return spec


class DepthResNet(ModelSpace):
    """A ResNet whose stages each choose their depth (NNI `Repeat`, label `layerS_depth`) within bounds."""

    def __init__(
        self,
        depth_ranges: tuple[tuple[int, int], ...] = ((1, 3), (1, 4), (1, 6), (1, 3)),
        block: str = "basic",
        num_classes: int = 10,
        stem: str = "cifar",
        width_multiplier: float = 1.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise SpecError(f"unknown block {block!r}; use basic or bottleneck.")
        for low, high in depth_ranges:
            if not 1 <= low <= high:
                raise SpecError(f"depth range ({low}, {high}) must satisfy 1 <= min <= max; a stage keeps its strided block.")
        self.depth_ranges = tuple(tuple(r) for r in depth_ranges)
        # The widest network of the space; a sample keeps the first `depth` blocks of each stage.
        self.base_spec = resnet_spec(
            18 if block == "basic" else 50,
            num_classes=num_classes,
            stem=stem,
            width_multiplier=width_multiplier,
            in_channels=in_channels,
            stage_depths=tuple(high for _, high in self.depth_ranges),
        )
        _add_stem(self, self.base_spec)
        block_type = BasicBlock if block == "basic" else Bottleneck
        channels = self.base_spec.stem.out_channels
        self.stage_names = []
        for stage_index, (stage, (low, high)) in enumerate(zip(self.base_spec.stages, self.depth_ranges), start=1):
            specs = stage.blocks
            in_channels_of = [channels] + [b.out_channels for b in specs[:-1]]

            def make_block(index: int, specs=specs, in_channels_of=in_channels_of) -> nn.Module:
                b = specs[index]
                return block_type(in_channels_of[index], b.widths, b.kernel_size, b.stride, b.activation, b.projection)

            depth = Repeat(make_block, (low, high), label=f"layer{stage_index}_depth")
            self.add_module(f"layer{stage_index}", depth)
            self.stage_names.append(f"layer{stage_index}")
            channels = specs[-1].out_channels
        _add_head(self, self.base_spec)
        _init_like_builder(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(self, x)

    def choice_labels(self) -> list[tuple[str, list]]:
        return [(f"layer{i}_depth", list(range(low, high + 1))) for i, (low, high) in enumerate(self.depth_ranges, 1)]

    def to_spec(self, sample: dict) -> ArchSpec:
        stages = []
        for (label, values), stage in zip(self.choice_labels(), self.base_spec.stages):
            depth = sample.get(label)
            if depth not in values:
                raise SpecError(f"{label}={depth!r} is outside this space; use one of {values}.")
            stages.append(StageSpec(blocks=stage.blocks[:depth], pool=stage.pool))
        return replace(self.base_spec, stages=tuple(stages))
