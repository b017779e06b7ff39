"""ArchSpec: the one description of a network that every resnas stage passes around.

Plain frozen dataclasses with JSON in/out and validation. Deliberately free of torch and nni imports so a
tuner, a config validator or a notebook can read and check architectures without building anything.

Layout of a network (module names follow timm/torchvision's ResNet):

    stem:   conv1 (k x k, stride s) - bn1 - act1 - [maxpool 3x3/s2]
    stages: layer1 .. layerN, each an optional pooling layer (`pool`, 2x2/s2) then zero or more blocks
    head:   global average pool - [dropout] - fc

Block kinds (every activation inside a block is the block's `activation`):

    conv:        conv1 (k x k, stride) - bn1 - act1                       widths = (c,)
    basic:       conv1 (k x k, stride) - bn1 - act1 - conv2 (k x k) - bn2 (+ shortcut) - act2
                                                                           widths = (c1, c2)
    resbuilder:  conv1 (k x k, stride) - bn1 - act1 - conv2 (k x k) - bn2 - act2 (+ shortcut)
                                                                           widths = (c1, c2)
    bottleneck:  conv1 1x1 - bn1 - act1 - conv2 (k x k, stride) - bn2 - act2 - conv3 1x1 - bn3
                 (+ shortcut) - act3                                       widths = (c1, c2, c3)

`resbuilder` is Burghoff et al.'s block, x + act(BN(conv(act(BN(conv(x)))))): both activations sit inside the
branch and nothing follows the sum, so a branch whose output is zero is exactly the identity (the basic block's
activation after the sum is not). ResBuilder inserts it; timm's own ResNet cannot build it.

A residual block's shortcut is the identity, or a 1x1 conv + BN (`downsample`) when `projection` is set;
a projection is required exactly when the stride is not 1 or the channel count changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SCHEMA_VERSION = 1

ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "mish", "silu", "gelu", "identity")
BLOCK_KINDS: tuple[str, ...] = ("conv", "basic", "bottleneck", "resbuilder")
POOLS: tuple[str, ...] = ("none", "max", "avg")
WIDTH_COUNT = {"conv": 1, "basic": 2, "bottleneck": 3, "resbuilder": 2}  # also the number of convs on the main path
RESIDUAL_KINDS = ("basic", "bottleneck", "resbuilder")


class SpecError(ValueError):
    """An ArchSpec that cannot be built; the message is one sentence naming the fix."""


def _check_choice(value: str, valid: tuple[str, ...], what: str, where: str) -> None:
    if value not in valid:
        raise SpecError(f"{where}: unknown {what} {value!r}; use one of {', '.join(valid)}.")


def _check_kernel(kernel_size: int, where: str) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise SpecError(f"{where}: kernel size {kernel_size!r} must be a positive odd integer (1, 3, 5, 7).")


def _check_width(width: int, where: str) -> None:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise SpecError(f"{where}: channel width {width!r} must be a positive integer.")


@dataclass(frozen=True)
class StemSpec:
    out_channels: int = 64
    kernel_size: int = 7
    stride: int = 2
    max_pool: bool = True
    activation: str = "relu"

    def validate(self) -> None:
        _check_width(self.out_channels, "stem")
        _check_kernel(self.kernel_size, "stem")
        _check_choice(self.activation, ACTIVATIONS, "activation", "stem")
        if self.stride < 1:
            raise SpecError(f"stem: stride {self.stride} must be at least 1.")


@dataclass(frozen=True)
class BlockSpec:
    kind: str
    widths: tuple[int, ...]
    kernel_size: int = 3
    activation: str = "relu"
    stride: int = 1
    projection: bool = False

    @property
    def out_channels(self) -> int:
        return self.widths[-1]

    @property
    def residual(self) -> bool:
        return self.kind in RESIDUAL_KINDS

    def validate(self, in_channels: int, where: str) -> None:
        _check_choice(self.kind, BLOCK_KINDS, "block kind", where)
        _check_choice(self.activation, ACTIVATIONS, "activation", where)
        _check_kernel(self.kernel_size, where)
        if len(self.widths) != WIDTH_COUNT[self.kind]:
            raise SpecError(
                f"{where}: a {self.kind} block needs {WIDTH_COUNT[self.kind]} widths, got {len(self.widths)}."
            )
        for width in self.widths:
            _check_width(width, where)
        if self.stride not in (1, 2):
            raise SpecError(f"{where}: stride {self.stride} must be 1 or 2.")
        if not self.residual:
            if self.projection:
                raise SpecError(f"{where}: a conv block has no shortcut; set projection=False.")
            return
        needs_projection = self.stride != 1 or in_channels != self.out_channels
        if needs_projection and not self.projection:
            raise SpecError(
                f"{where}: mismatched channels on the shortcut ({in_channels} in, {self.out_channels} out, "
                f"stride {self.stride}); set projection=True or make the block keep its shape."
            )


@dataclass(frozen=True)
class StageSpec:
    blocks: tuple[BlockSpec, ...] = ()
    pool: str = "none"


@dataclass(frozen=True)
class HeadSpec:
    num_classes: int = 1000
    dropout: float = 0.0


@dataclass(frozen=True)
class ArchSpec:
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    in_channels: int = 3
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation -------------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.version != SCHEMA_VERSION:
            raise SpecError(
                f"ArchSpec schema version {self.version} is not supported; this resnas reads version "
                f"{SCHEMA_VERSION}."
            )
        _check_width(self.in_channels, "in_channels")
        self.stem.validate()
        if not self.stages:
            raise SpecError("an ArchSpec needs at least one stage; add a StageSpec.")
        channels = self.stem.out_channels
        for stage_index, stage in enumerate(self.stages, start=1):
            _check_choice(stage.pool, POOLS, "pool", f"layer{stage_index}")
            for block_index, block in enumerate(stage.blocks):
                block.validate(channels, f"layer{stage_index}.{block_index}")
                channels = block.out_channels
        if self.head.num_classes < 1:
            raise SpecError(f"head: num_classes {self.head.num_classes} must be at least 1.")
        if not 0.0 <= self.head.dropout < 1.0:
            raise SpecError(f"head: dropout {self.head.dropout} must be in [0, 1).")

    # ---- derived facts ----------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        channels = self.stem.out_channels
        for stage in self.stages:
            for block in stage.blocks:
                channels = block.out_channels
        return channels

    def stage_out_channels(self) -> list[int]:
        channels, result = self.stem.out_channels, []
        for stage in self.stages:
            for block in stage.blocks:
                channels = block.out_channels
            result.append(channels)
        return result

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(stage.blocks) for stage in self.stages)

    def iter_blocks(self):
        """Yield (stage_index starting at 1, block_index, BlockSpec) in forward order."""
        for stage_index, stage in enumerate(self.stages, start=1):
            for block_index, block in enumerate(stage.blocks):
                yield stage_index, block_index, block

    def replace_block(self, stage_index: int, block_index: int, block: BlockSpec) -> "ArchSpec":
        blocks = self.stages[stage_index - 1].blocks
        return self.replace_blocks(stage_index, blocks[:block_index] + (block,) + blocks[block_index + 1 :])

    def replace_blocks(self, stage_index: int, blocks: tuple[BlockSpec, ...]) -> "ArchSpec":
        """This spec with stage `stage_index` (1-based) holding `blocks`; its pooling layer stays."""
        stages = list(self.stages)
        stages[stage_index - 1] = replace(stages[stage_index - 1], blocks=tuple(blocks))
        return replace(self, stages=tuple(stages))

    # ---- JSON -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchSpec":
        if not isinstance(data, dict):
            raise SpecError(f"an ArchSpec must be a JSON object, got {type(data).__name__}.")
        top_level = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - top_level)
        if unknown:
            raise SpecError(f"ArchSpec: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(top_level))}.")
        try:
            return cls(
                stem=_build(StemSpec, data["stem"], "stem"),
                stages=tuple(
                    StageSpec(
                        blocks=tuple(
                            _build(BlockSpec, {**block, "widths": tuple(block["widths"])}, f"layer{i}.{j}")
                            for j, block in enumerate(stage.get("blocks", ()))
                        ),
                        pool=stage.get("pool", "none"),
                    )
                    for i, stage in enumerate(data["stages"], start=1)
                ),
                head=_build(HeadSpec, data.get("head", {}), "head"),
                in_channels=data.get("in_channels", 3),
                version=data.get("version", SCHEMA_VERSION),
            )
        except KeyError as missing:
            raise SpecError(f"ArchSpec JSON lacks the key {missing}; write it with ArchSpec.to_json().") from None

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(f"ArchSpec JSON does not parse ({error}); write it with ArchSpec.to_json().") from None
        return cls.from_dict(data)


def _build(kind: type, data: dict[str, Any], where: str):
    valid = set(kind.__dataclass_fields__)
    unknown = sorted(set(data) - valid)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(valid))}.")
    return kind(**data)


# ---- the standard networks ------------------------------------------------------------------------------
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STEMS: dict[str, StemSpec] = {
    "imagenet": StemSpec(out_channels=64, kernel_size=7, stride=2, max_pool=True),
    "cifar": StemSpec(out_channels=64, kernel_size=3, stride=1, max_pool=False),
}


def residual_stage(
    kind: str,
    depth: int,
    in_channels: int,
    planes: int,
    stride: int,
    kernel_sizes: tuple[int, ...] | None = None,
    activations: tuple[str, ...] | None = None,
) -> StageSpec:
    """A torchvision-style stage of `depth` blocks; the first carries the stride (and projection if needed)."""
    kernel_sizes = kernel_sizes or (3,) * depth
    activations = activations or ("relu",) * depth
    widths = (planes, planes) if kind == "basic" else (planes, planes, planes * 4)
    blocks = []
    channels = in_channels
    for index in range(depth):
        block_stride = stride if index == 0 else 1
        blocks.append(
            BlockSpec(
                kind=kind,
                widths=widths,
                kernel_size=kernel_sizes[index],
                activation=activations[index],
                stride=block_stride,
                projection=block_stride != 1 or channels != widths[-1],
            )
        )
        channels = widths[-1]
    return StageSpec(blocks=tuple(blocks))


def resnet_spec(
    depth: int,
    num_classes: int = 1000,
    stem: str = "imagenet",
    width_multiplier: float = 1.0,
    in_channels: int = 3,
    stage_depths: tuple[int, ...] | None = None,
) -> ArchSpec:
    """The standard ResNet-18/34/50/101/152 (torchvision/timm layout), optionally narrowed or re-depthed."""
    if depth not in RESNET_LAYOUTS:
        raise SpecError(f"ResNet depth {depth} is not standard; use one of {', '.join(map(str, RESNET_LAYOUTS))}.")
    _check_choice(stem, tuple(STEMS), "stem", "resnet_spec")
    kind, default_depths = RESNET_LAYOUTS[depth]
    stage_depths = stage_depths or default_depths
    base = max(1, round(64 * width_multiplier))
    stem_spec = replace(STEMS[stem], out_channels=base)
    stages, channels = [], base
    for index, stage_depth in enumerate(stage_depths):
        planes = base * 2**index
        stage = residual_stage(kind, stage_depth, channels, planes, stride=1 if index == 0 else 2)
        stages.append(stage)
        if stage.blocks:
            channels = stage.blocks[-1].out_channels
    return ArchSpec(
        stem=stem_spec, stages=tuple(stages), head=HeadSpec(num_classes=num_classes), in_channels=in_channels
    )


def resbuilder_start_spec(num_classes: int = 10, width: int = 32, in_channels: int = 3) -> ArchSpec:
    """ResBuilder's RB-0Net: one conv, two pooling layers, a dense layer (blocks get inserted later)."""
    return ArchSpec(
        stem=StemSpec(out_channels=width, kernel_size=3, stride=1, max_pool=False),
        stages=(StageSpec(pool="max"), StageSpec(pool="max")),
        head=HeadSpec(num_classes=num_classes),
        in_channels=in_channels,
    )


def nash_start_spec(num_classes: int = 10, widths: tuple[int, int, int] = (64, 128, 256), in_channels: int = 3) -> ArchSpec:
    """NASH's start net: conv - maxpool - conv - maxpool - conv - fc."""
    return ArchSpec(
        stem=StemSpec(out_channels=widths[0], kernel_size=3, stride=1, max_pool=False),
        stages=(
            StageSpec(pool="max", blocks=(BlockSpec("conv", (widths[1],)),)),
            StageSpec(pool="max", blocks=(BlockSpec("conv", (widths[2],)),)),
        ),
        head=HeadSpec(num_classes=num_classes),
        in_channels=in_channels,
    )


CIFAR_RESNET_WIDTHS = (16, 32, 64)


def cifar_resnet_spec(
    stage_depths: tuple[int, ...] = (6, 6, 6),
    widths: tuple[int, ...] = CIFAR_RESNET_WIDTHS,
    num_classes: int = 10,
    in_channels: int = 3,
) -> ArchSpec:
    """He et al.'s CIFAR ResNet (the stage-wise search's space): a 3x3 stem at widths[0], one stage of basic
    blocks per width with stride 2 between stages, global average pool, dense head. (6n+2 layers: n = 9 is
    ResNet-56; the stage-wise paper counts 2 * sum(stage_depths) + 3, so (6, 6, 6) is its "ResNet39".)"""
    if len(stage_depths) != len(widths):
        raise SpecError(f"cifar_resnet_spec: {len(stage_depths)} stage depths for {len(widths)} widths; give one "
                        f"depth per stage width.")
    if any(depth < 1 for depth in stage_depths):
        raise SpecError(f"cifar_resnet_spec: every stage needs at least one block, got depths {list(stage_depths)}.")
    stages, channels = [], widths[0]
    for index, (depth, planes) in enumerate(zip(stage_depths, widths)):
        stages.append(residual_stage("basic", depth, channels, planes, stride=1 if index == 0 else 2))
        channels = planes
    return ArchSpec(
        stem=StemSpec(out_channels=widths[0], kernel_size=3, stride=1, max_pool=False),
        stages=tuple(stages),
        head=HeadSpec(num_classes=num_classes),
        in_channels=in_channels,
    )
