"""ResBuilder's loss terms: LayerLasso (G_L, paper eq. 3) and MorphNet's FLOP regulariser (G_M, eq. 1-2).

Both come in the `ExtraLoss = (name, fn(model))` form of trainers.system, so the total loss is
CE + lambda_L * G_L + lambda_M * G_M (the L2 term lambda_0 is the optimiser's weight decay).

FLOP convention: a multiply-add counts as two FLOPs, as in search_spaces/cost.py, so a k x k conv from
c_in to c_out channels on an u x v output costs C * c_in * c_out FLOPs with C = 2 * k * k * u * v.

MorphNet (Gordon et al. 2018) replaces the channel counts of that cost by BN scales: for a conv j reading
channels with scales gamma_in and writing channels with scales gamma_out,

    G_M(j) = C_j * (sum_p |gamma_in_p| * alive(gamma_out) + alive(gamma_in) * sum_k |gamma_out_k|),

alive(g) = #{|g| > threshold}, held constant within a step (the term is differentiable in the gammas).
The image (first conv's input) has no scales: the first sum is 0 and alive = image channels; the fc's
logits have no scales either: the second sum is 0 and alive = classes. Channels added together by a
residual shortcut are one channel each: per channel the group's scale is the max over its BNs' |gamma|
(MorphNet's grouping default).

Deliberately no `search_spaces` import (it pulls in NNI; trainers stay NNI-free): the spec is read by
attribute, as trainers/checkpoint.py does. search_spaces/width_groups.py walks the same groups for the
width step; tests/test_regularizers.py checks that the two walks agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .system import ExtraLoss

if TYPE_CHECKING:
    from search_spaces.spec import ArchSpec

LAYER_LASSO = "layer_lasso"
MORPHNET = "morphnet"
RESIDUAL_CONVS = ("conv1", "conv2", "conv3")


# ---- LayerLasso ---------------------------------------------------------------------------------------------
def residual_block_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(name, conv) of the convs inside residual blocks, excluding shortcuts, the stem and the head.

    A residual block is recognised by its `downsample` attribute (None or the projection), which
    resnas's, timm's and torchvision's BasicBlock/Bottleneck all carry and a plain conv block does not.
    """
    convs = []
    for name, module in model.named_modules():
        if module is model or not hasattr(module, "downsample"):
            continue
        for attribute in RESIDUAL_CONVS:
            conv = getattr(module, attribute, None)
            if isinstance(conv, nn.Conv2d):
                convs.append((f"{name}.{attribute}", conv))
    return convs


def layer_lasso(model: nn.Module) -> torch.Tensor:
    """G_L: the sum of |w| over every conv weight inside the residual blocks (0 when there are none)."""
    weights = [conv.weight.abs().sum() for _, conv in residual_block_convs(model)]
    if not weights:
        device = next(model.parameters()).device
        return torch.zeros((), device=device)
    return torch.stack(weights).sum()


def layer_lasso_term(weight: float) -> ExtraLoss:
    return LAYER_LASSO, lambda model: weight * layer_lasso(model)


# ---- MorphNet -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvCost:
    """One conv (or the fc) of the graph: its per-channel-pair cost and the groups on either side."""

    name: str
    coefficient: int  # C_j = 2 * kernel area * output height * output width
    in_group: int | None  # index into MorphNetPenalty.groups; None = the image
    out_group: int | None  # None = the logits


def _conv_size(size: int, stride: int) -> int:
    # a k x k conv with padding k // 2 (k odd), as search_spaces.blocks.conv2d builds it
    return (size - 1) // stride + 1


class MorphNetPenalty:
    """G_M of networks built from one ArchSpec; the conv graph and spatial sizes are worked out once.

    Build a new one after every architecture edit: the graph follows the spec it was made from.
    """

    def __init__(self, spec: ArchSpec, input_size: tuple[int, int, int], threshold: float = 1e-2):
        self.threshold = threshold
        self.in_channels = spec.in_channels
        self.num_classes = spec.head.num_classes
        self.groups: list[list[str]] = []  # BN module names whose outputs share channels
        self.convs: list[ConvCost] = []
        self._walk(spec, input_size)

    def _new_group(self, *members: str) -> int:
        self.groups.append(list(members))
        return len(self.groups) - 1

    def _add(self, name: str, kernel: int, size: tuple[int, int], in_group: int | None, out_group: int | None):
        self.convs.append(ConvCost(name, 2 * kernel * kernel * size[0] * size[1], in_group, out_group))

    def _walk(self, spec: ArchSpec, input_size: tuple[int, int, int]) -> None:
        stem = spec.stem
        height, width = (_conv_size(n, stem.stride) for n in input_size[1:])
        stream = self._new_group("bn1")
        self._add("conv1", stem.kernel_size, (height, width), None, stream)
        if stem.max_pool:  # 3x3, stride 2, padding 1
            height, width = _conv_size(height, 2), _conv_size(width, 2)
        for stage_index, stage in enumerate(spec.stages, start=1):
            if stage.pool != "none":  # 2x2, stride 2, no padding
                height, width = height // 2, width // 2
            for block_index, block in enumerate(stage.blocks):
                prefix = f"layer{stage_index}.{block_index}"
                strided = (_conv_size(height, block.stride), _conv_size(width, block.stride))
                if block.kind == "conv":
                    output = self._new_group(f"{prefix}.bn1")
                    self._add(f"{prefix}.conv1", block.kernel_size, strided, stream, output)
                    stream, (height, width) = output, strided
                    continue
                last = len(block.widths)
                if block.projection:
                    output = self._new_group(f"{prefix}.bn{last}", f"{prefix}.downsample.1")
                    self._add(f"{prefix}.downsample.0", 1, strided, stream, output)
                else:
                    output = stream
                    self.groups[stream].append(f"{prefix}.bn{last}")
                # bottleneck: 1x1, k x k (strided), 1x1; basic: k x k (strided), k x k
                kernels = (1, block.kernel_size, 1) if block.kind == "bottleneck" else (block.kernel_size,) * 2
                stride_at = 1 if block.kind == "bottleneck" else 0
                previous, size = stream, (height, width)
                for index, kernel in enumerate(kernels):
                    if index == stride_at:
                        size = strided
                    group = output if index == last - 1 else self._new_group(f"{prefix}.bn{index + 1}")
                    self._add(f"{prefix}.conv{index + 1}", kernel, size, previous, group)
                    previous = group
                stream, (height, width) = output, strided
        self._add("fc", 1, (1, 1), stream, None)

    # ---- per step -------------------------------------------------------------------------------------------
    def group_scales(self, model: nn.Module) -> list[torch.Tensor]:
        """Per group, per channel: max over the group's BNs of |gamma| (differentiable)."""
        scales = []
        for members in self.groups:
            gammas = [model.get_submodule(name).weight.abs() for name in members]
            scales.append(gammas[0] if len(gammas) == 1 else torch.stack(gammas).amax(0))
        return scales

    def alive_counts(self, model: nn.Module) -> list[int]:
        with torch.no_grad():
            return [int((scale > self.threshold).sum()) for scale in self.group_scales(model)]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        scales = self.group_scales(model)
        sums = [scale.sum() for scale in scales]
        # counts are constants of the step (MorphNet's indicator has no gradient); kept on device, no sync
        alive = [(scale.detach() > self.threshold).sum().to(scale.dtype) for scale in scales]
        terms = []
        for conv in self.convs:
            in_sum = sums[conv.in_group] if conv.in_group is not None else 0.0
            in_alive = alive[conv.in_group] if conv.in_group is not None else self.in_channels
            out_sum = sums[conv.out_group] if conv.out_group is not None else 0.0
            out_alive = alive[conv.out_group] if conv.out_group is not None else self.num_classes
            terms.append(conv.coefficient * (in_sum * out_alive + in_alive * out_sum))
        return torch.stack(terms).sum()

    def alive_flops(self, model: nn.Module) -> int:
        """FLOPs of the net with only its alive channels (equals measure_cost when every channel is alive)."""
        alive = self.alive_counts(model)
        total = 0
        for conv in self.convs:
            in_alive = alive[conv.in_group] if conv.in_group is not None else self.in_channels
            out_alive = alive[conv.out_group] if conv.out_group is not None else self.num_classes
            total += conv.coefficient * in_alive * out_alive
        return total


def morphnet_penalty(model: nn.Module, input_size: tuple[int, int, int], threshold: float = 1e-2) -> torch.Tensor:
    """G_M of a built ResNasNet (walks its arch_spec each call; prefer MorphNetPenalty inside training)."""
    return MorphNetPenalty(model.arch_spec, input_size, threshold)(model)


def morphnet_term(
    weight: float, spec: ArchSpec, input_size: tuple[int, int, int], threshold: float = 1e-2
) -> ExtraLoss:
    penalty = MorphNetPenalty(spec, input_size, threshold)
    return MORPHNET, lambda model: weight * penalty(model)


def alive_widths(model: nn.Module, threshold: float = 1e-2) -> dict[str, int]:
    """Alive channels per width group, keyed by the group's first BN (for logs; the width step reads these)."""
    penalty = MorphNetPenalty(model.arch_spec, (model.arch_spec.in_channels, 1, 1), threshold)
    return {members[0]: count for members, count in zip(penalty.groups, penalty.alive_counts(model))}
