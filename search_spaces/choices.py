"""The decisions of resnas's NNI spaces, without NNI or torch: labels, candidate values, and the ArchSpec a sample
names.

`ScopedResNet50` and `DepthResNet` (spaces/resnet_spaces.py) hold one of these and build their modules around it;
config checks, `resnas space` (NNI `searchSpace` files for the built-in tuners) and tuner processes read the
same decisions here without building a supernet or importing torch.

- Labels are named by position without dots ("layer3_2_kernel", "layer2_depth"): NNI's DARTS registers
  labels as parameter names and refuses a dot.
- A sample is {label: value}, as NNI 3.0 strategies export it and NNI's built-in tuners hand it to a trial:
  a kernel value is the candidate name "k3"/"k5", an activation value its name ("mish"), a depth an int.
  Extra keys are ignored: NNI's Proxyless adds its own per-block gates ("layer2_depth/in_repeat_1") beside
  the depth label.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .scopes import ACTIVATION_CANDIDATES, KERNEL_CANDIDATES, SCOPES
from .spec import STEMS, ArchSpec, HeadSpec, SpecError, StageSpec, residual_stage, resnet_spec

DEPTH_BLOCKS: tuple[str, ...] = ("basic", "bottleneck")  # the block kinds spec.residual_stage lays out
ChoiceLabels = list[tuple[str, list[Any]]]


def kernel_name(kernel_size: int) -> str:
    """The LayerChoice candidate name (and sample value) of a middle-conv kernel size."""
    return f"k{kernel_size}"


def sample_value(sample: dict, label: str, values: list, where: str) -> Any:
    if label not in sample:
        raise SpecError(f"the sample has no value for {label!r}; sample every label of {where}.choice_labels().")
    value = sample[label]
    if value not in values:
        raise SpecError(f"{label}={value!r} is not a candidate of this {where}; use one of {values}.")
    return value


@dataclass(frozen=True)
class ScopeChoices:
    """Kernel x activation of every ResNet-50 bottleneck inside `scope`; blocks outside it stay k3/ReLU."""

    base_spec: ArchSpec
    scope: str
    kernels: tuple[int, ...] = KERNEL_CANDIDATES
    activations: tuple[str, ...] = ACTIVATION_CANDIDATES

    @classmethod
    def resnet50(cls, scope: str, num_classes: int = 10, stem: str = "imagenet", width_multiplier: float = 1.0,
                 in_channels: int = 3, kernels: tuple[int, ...] = KERNEL_CANDIDATES,
                 activations: tuple[str, ...] = ACTIVATION_CANDIDATES) -> "ScopeChoices":
        if scope not in SCOPES:
            raise SpecError(f"unknown search scope {scope!r}; use one of s, m, l, f (last 1, 2, 3 or all 4 stages).")
        for kernel in kernels:
            if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
                raise SpecError(f"kernel size {kernel!r} must be a positive odd integer (1, 3, 5, 7).")
        if not kernels or not activations:
            raise SpecError("a ScopedResNet50 needs at least one kernel and one activation candidate.")
        base = resnet_spec(50, num_classes=num_classes, stem=stem, width_multiplier=width_multiplier,
                           in_channels=in_channels)
        return cls(base, scope, tuple(kernels), tuple(activations))

    def searched_blocks(self):
        """(stage index from 1, block index, BlockSpec) of every block inside the scope, in forward order."""
        for stage_index, block_index, block in self.base_spec.iter_blocks():
            if stage_index in SCOPES[self.scope]:
                yield stage_index, block_index, block

    def choice_labels(self) -> ChoiceLabels:
        """(label, candidate values) of every decision, in forward order: kernel then activation per block."""
        labels = []
        for stage_index, block_index, _ in self.searched_blocks():
            prefix = f"layer{stage_index}_{block_index}"
            labels.append((f"{prefix}_kernel", [kernel_name(k) for k in self.kernels]))
            labels.append((f"{prefix}_act", list(self.activations)))
        return labels

    def to_spec(self, sample: dict) -> ArchSpec:
        """The ArchSpec of the path `sample` (label -> candidate name) picks."""
        spec = self.base_spec
        kernels = {kernel_name(k): k for k in self.kernels}
        for stage_index, block_index, block in self.searched_blocks():
            prefix = f"layer{stage_index}_{block_index}"
            kernel = sample_value(sample, f"{prefix}_kernel", list(kernels), "ScopedResNet50")
            activation = sample_value(sample, f"{prefix}_act", list(self.activations), "ScopedResNet50")
            block = replace(block, kernel_size=kernels[kernel], activation=activation)
            spec = spec.replace_block(stage_index, block_index, block)
        return spec


@dataclass(frozen=True)
class DepthChoices:
    """The depth of every stage within (min, max); `base_spec` is the widest network (every stage at its max).

    Stage S has `widths[S-1]` planes (basic: two convs of that width; bottleneck: planes, planes, 4*planes);
    the first block of stages 2.. has stride 2 (torchvision layout). A sample keeps the first `depth` blocks of
    each stage. A stage with a fixed depth (min == max) has no label.
    """

    base_spec: ArchSpec
    depth_ranges: tuple[tuple[int, int], ...]

    @classmethod
    def resnet(cls, depth_ranges: tuple[tuple[int, int], ...] = ((1, 3), (1, 4), (1, 6), (1, 3)), block: str = "basic",
               widths: tuple[int, ...] | None = None, num_classes: int = 10, stem: str = "cifar",
               width_multiplier: float = 1.0, in_channels: int = 3) -> "DepthChoices":
        if block not in DEPTH_BLOCKS:
            raise SpecError(f"unknown block {block!r}; use one of {', '.join(DEPTH_BLOCKS)}.")
        if stem not in STEMS:
            raise SpecError(f"unknown stem {stem!r}; use one of {', '.join(STEMS)}.")
        ranges = tuple((int(low), int(high)) for low, high in depth_ranges)
        if not ranges:
            raise SpecError("a DepthResNet needs at least one stage; give one (min, max) depth per stage.")
        for stage_index, (low, high) in enumerate(ranges, start=1):
            if not 0 <= low <= high or high < 1:
                raise SpecError(
                    f"layer{stage_index}: depth range ({low}, {high}) must satisfy 0 <= min <= max and max >= 1."
                )
        base = max(1, round(64 * width_multiplier))
        widths = tuple(widths) if widths is not None else tuple(base * 2**i for i in range(len(ranges)))
        if len(widths) != len(ranges):
            raise SpecError(f"{len(widths)} widths for {len(ranges)} stages; give one width per stage.")
        stem_spec = replace(STEMS[stem], out_channels=widths[0])
        stages, channels = [], widths[0]
        for index, ((_, high), planes) in enumerate(zip(ranges, widths)):
            stages.append(residual_stage(block, high, channels, planes, stride=1 if index == 0 else 2))
            channels = stages[-1].blocks[-1].out_channels
        widest = ArchSpec(stem=stem_spec, stages=tuple(stages), head=HeadSpec(num_classes), in_channels=in_channels)
        return cls(widest, ranges)

    def choice_labels(self) -> ChoiceLabels:
        """(label, candidate depths) of every variable stage, in forward order."""
        return [
            (f"layer{index}_depth", list(range(low, high + 1)))
            for index, (low, high) in enumerate(self.depth_ranges, start=1)
            if low != high
        ]

    def to_spec(self, sample: dict) -> ArchSpec:
        """The ArchSpec of the sampled depths (label -> int); fixed stages keep their depth."""
        depths = [high for _, high in self.depth_ranges]
        for label, values in self.choice_labels():
            depths[int(label[len("layer") : -len("_depth")]) - 1] = sample_value(sample, label, values, "DepthResNet")
        stages = tuple(
            StageSpec(blocks=stage.blocks[:depth], pool=stage.pool)
            for stage, depth in zip(self.base_spec.stages, depths)
        )
        return replace(self.base_spec, stages=stages)


def nni_search_space(labels: ChoiceLabels) -> dict[str, dict[str, Any]]:
    """NNI's `searchSpace` for the built-in tuners (Random, TPE, Evolution, GridSearch): every label a choice."""
    return {label: {"_type": "choice", "_value": list(values)} for label, values in labels}
