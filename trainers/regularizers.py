"""ResBuilder's loss terms: LayerLasso (G_L, paper eq. 3) and MorphNet's FLOP regulariser (G_M, eq. 1-2).

Both come in the `ExtraLoss = (name, fn(model))` form of trainers.system, so the total loss is
CE + lambda_L * G_L + lambda_M * G_M (the L2 term lambda_0 is the optimiser's weight decay, on conv and dense
kernels only: OptimConfig(weight_decay_on="kernels"), so the BN scales G_M reads are not decayed).

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

The groups are search_spaces.edits.width_groups' (the ones MorphNet's width step narrows), and each conv's
C_j is its FLOPs from search_spaces.cost divided by its channel pairs: one walk and one FLOP count for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from search_spaces.builder import build_model
from search_spaces.cost import measure_cost
from search_spaces.edits.width_groups import group_scales, width_groups
from search_spaces.spec import ArchSpec

from .system import ExtraLoss

LAYER_LASSO = "layer_lasso"
MORPHNET = "morphnet"
RESIDUAL_CONVS = ("conv1", "conv2", "conv3")


# ---- LayerLasso ---------------------------------------------------------------------------------------------
def residual_block_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(name, conv) of the convs inside residual blocks, excluding shortcuts, the stem and the head.

    A residual block is recognised by its `downsample` attribute (None or the projection), which
    resnas's (basic, bottleneck, resbuilder), timm's and torchvision's blocks all carry and a plain conv block
    does not.
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


class MorphNetPenalty:
    """G_M of networks built from one ArchSpec; the conv graph and spatial sizes are worked out once.

    Build a new one after every architecture edit: the graph follows the spec it was made from.
    """

    def __init__(self, spec: ArchSpec, input_size: tuple[int, int, int], threshold: float = 1e-2):
        self.threshold = threshold
        self.in_channels = spec.in_channels
        self.num_classes = spec.head.num_classes
        groups = width_groups(spec)
        self.groups: list[list[str]] = [[bn for _, bn in group.producers] for group in groups]  # BNs sharing channels
        in_group: dict[str, int] = {}
        out_group: dict[str, int] = {}
        for index, group in enumerate(groups):
            out_group.update({conv: index for conv, _ in group.producers})
            in_group.update({consumer: index for consumer in group.consumers})
        with torch.device("meta"):  # shapes only: no weights are allocated
            model = build_model(spec, zero_init_last=False)
        flops = {layer.name: layer.flops for layer in measure_cost(model, input_size).layers}
        self.convs: list[ConvCost] = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                pairs = module.in_channels * module.out_channels
            elif isinstance(module, nn.Linear):
                pairs = module.in_features * module.out_features
            else:
                continue
            self.convs.append(ConvCost(name, flops[name] // pairs, in_group.get(name), out_group.get(name)))

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
    groups = width_groups(model.arch_spec)
    scales = group_scales(groups, model.state_dict())
    return {group.name: int((scale > threshold).sum()) for group, scale in zip(groups, scales)}
