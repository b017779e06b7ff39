"""NASH network morphisms on (ArchSpec, state_dict): the child starts computing exactly what its parent did.

The state dict is split into the stem, one dict per (stage, block) with block-relative keys (`conv1.weight`)
and the head; an op edits those lists and the join renumbers the blocks, which renames the keys of every
block after an insertion or a merge. Input dicts and tensors are never modified; tensors an op does not
touch are shared with the parent's dict rather than copied.

Exactness holds in eval mode with the parent's running BN statistics (train-mode BN renormalises by batch
statistics, which an inserted identity layer does not reproduce).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.nn import functional as F

from .morphism_ops import Morphism, MorphismError, apply_to_spec, next_block
from .spec import ArchSpec

Tensors = dict[str, torch.Tensor]
STEM_LAYERS = ("conv1", "bn1")
HEAD_LAYERS = ("fc",)
# Per (block kind, width index): the layers whose output channels make that width.
PRODUCERS: dict[tuple[str, int], tuple[str, ...]] = {
    ("conv", 0): ("conv1", "bn1"),
    ("basic", 0): ("conv1", "bn1"),
    ("basic", 1): ("conv2", "bn2", "downsample.0", "downsample.1"),
    ("bottleneck", 0): ("conv1", "bn1"),
    ("bottleneck", 1): ("conv2", "bn2"),
    ("bottleneck", 2): ("conv3", "bn3", "downsample.0", "downsample.1"),
}
INNER_CONSUMERS = {("basic", 0): "conv2", ("bottleneck", 0): "conv2", ("bottleneck", 1): "conv3"}


@dataclass
class _Parts:
    stem: Tensors
    stages: list[list[Tensors]]
    head: Tensors


def _split(spec: ArchSpec, state_dict: Tensors) -> _Parts:
    parts = _Parts({}, [[{} for _ in stage.blocks] for stage in spec.stages], {})
    for key, tensor in state_dict.items():
        layer = key.split(".", 1)[0]
        if layer in STEM_LAYERS:
            parts.stem[key] = tensor
        elif layer in HEAD_LAYERS:
            parts.head[key] = tensor
        else:
            _, block, rest = (key.split(".", 2) + ["", ""])[:3]
            stage = layer.removeprefix("layer")
            if not (stage.isdigit() and block.isdigit() and rest):
                raise MorphismError(
                    f"state dict key {key!r} is not a resnas key; pass build_model(spec).state_dict()."
                )
            stage_index, block_index = int(stage), int(block)
            if not (1 <= stage_index <= len(spec.stages) and block_index < len(spec.stages[stage_index - 1].blocks)):
                raise MorphismError(
                    f"state dict key {key!r} has no block in the spec; pass the spec this state dict belongs to."
                )
            parts.stages[stage_index - 1][block_index][rest] = tensor
    return parts


def _join(parts: _Parts) -> Tensors:
    joined = dict(parts.stem)
    for stage_index, blocks in enumerate(parts.stages, start=1):
        for block_index, block in enumerate(blocks):
            joined.update({f"layer{stage_index}.{block_index}.{key}": value for key, value in block.items()})
    joined.update(parts.head)
    return joined


# ---- fresh layers ---------------------------------------------------------------------------------------
def _batch_norm(channels: int, like: torch.Tensor, weight: float, bias: float, prefix: str) -> Tensors:
    options = dict(dtype=like.dtype, device=like.device)
    return {
        f"{prefix}.weight": torch.full((channels,), weight, **options),
        f"{prefix}.bias": torch.full((channels,), bias, **options),
        f"{prefix}.running_mean": torch.zeros(channels, **options),
        f"{prefix}.running_var": torch.ones(channels, **options),
        f"{prefix}.num_batches_tracked": torch.tensor(0, dtype=torch.long, device=like.device),
    }


def _kaiming(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Same scheme as builder.init_resnet_weights (fan_out, relu), drawn from the morphism's own seed.
    fan_out = shape[0] * math.prod(shape[2:])
    weight = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_out)
    return weight.to(dtype=like.dtype, device=like.device)


def _dirac(channels: int, kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    weight = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=like.dtype, device=like.device)
    torch.nn.init.dirac_(weight)
    return weight


# ---- the ops --------------------------------------------------------------------------------------------
def _deepen(parts: _Parts, morphism: Morphism, child: ArchSpec) -> None:
    new_spec = child.stages[morphism.stage - 1].blocks[morphism.block]
    channels, kernel_size = new_spec.widths[0], new_spec.kernel_size
    like = parts.stem["conv1.weight"]
    if new_spec.kind == "conv":
        # BN(x) = x in eval: (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0 (eps is BatchNorm2d's default 1e-5).
        block = {"conv1.weight": _dirac(channels, kernel_size, like)}
        block.update(_batch_norm(channels, like, math.sqrt(1.0 + 1e-5), 0.0, "bn1"))
    else:
        # bn2's zero weight and bias make the branch add exactly zero; the convs get a real init so that the
        # gradient on bn2's weight is informative and the block can learn once it opens.
        generator = torch.Generator().manual_seed(morphism.seed)
        shape = (channels, channels, kernel_size, kernel_size)
        block = {"conv1.weight": _kaiming(shape, like, generator), "conv2.weight": _kaiming(shape, like, generator)}
        block.update(_batch_norm(channels, like, 1.0, 0.0, "bn1"))
        block.update(_batch_norm(channels, like, 0.0, 0.0, "bn2"))
    parts.stages[morphism.stage - 1].insert(morphism.block, block)


def _widen(parts: _Parts, morphism: Morphism, parent: ArchSpec) -> None:
    stage, block = morphism.stage, morphism.block
    if stage == 0:
        width, kind = parent.stem.out_channels, "stem"
        producer_dict, producer_layers = parts.stem, STEM_LAYERS
    else:
        block_spec = parent.stages[stage - 1].blocks[block]
        width, kind = block_spec.widths[morphism.width_index], block_spec.kind
        producer_dict = parts.stages[stage - 1][block]
        producer_layers = PRODUCERS[(kind, morphism.width_index)]
    sources, fractions = _copy_plan(width, morphism.new_width, morphism.seed)
    index = torch.tensor(sources, device=producer_dict[f"{producer_layers[0]}.weight"].device)

    for key, tensor in list(producer_dict.items()):
        if key.rsplit(".", 1)[0] in producer_layers and tensor.dim() > 0:
            producer_dict[key] = tensor.index_select(0, index)
    for consumer_dict, layer in _consumers(parts, parent, stage, block, (kind, morphism.width_index)):
        weight = consumer_dict[f"{layer}.weight"]
        scale = torch.tensor(fractions, dtype=weight.dtype, device=weight.device)
        scale = scale.reshape(1, -1, *([1] * (weight.dim() - 2)))
        consumer_dict[f"{layer}.weight"] = weight.index_select(1, index) * scale


def _copy_plan(width: int, new_width: int, seed: int) -> tuple[list[int], list[float]]:
    """Net2Wider's mapping: channel j of the wide layer copies channel sources[j]; the consumer's input weight
    of sources[j] is multiplied by fractions[j]. The fractions of one original channel and its copies sum to 1
    (exact), and are random rather than equal: with an equal split the copies get equal gradients forever and
    stay copies; unequal ones break that symmetry so the new channels can diverge in training."""
    rng = random.Random(seed)
    sources = list(range(width)) + [rng.randrange(width) for _ in range(new_width - width)]
    members: dict[int, list[int]] = {}
    for channel, source in enumerate(sources):
        members.setdefault(source, []).append(channel)
    fractions = [1.0] * new_width
    for group in members.values():
        if len(group) > 1:
            draws = [rng.uniform(0.5, 1.5) for _ in group]
            for channel, draw in zip(group, draws):
                fractions[channel] = draw / sum(draws)
    return sources, fractions


def _consumers(
    parts: _Parts, parent: ArchSpec, stage: int, block: int, width_key: tuple[str, int]
) -> list[tuple[Tensors, str]]:
    if width_key in INNER_CONSUMERS:
        return [(parts.stages[stage - 1][block], INNER_CONSUMERS[width_key])]
    following = next_block(parent, stage, block)
    if following is None:
        return [(parts.head, "fc")]
    next_stage, next_index, next_spec = following
    next_dict = parts.stages[next_stage - 1][next_index]
    layers = ["conv1"] + (["downsample.0"] if next_spec.projection else [])
    return [(next_dict, layer) for layer in layers]


def _add_skip(parts: _Parts, morphism: Morphism) -> None:
    blocks = parts.stages[morphism.stage - 1]
    first, second = blocks[morphism.block], blocks[morphism.block + 1]
    merged = dict(first)
    # The second conv block's conv1/bn1 become the basic block's conv2/bn2.
    merged.update({key.replace("conv1.", "conv2.").replace("bn1.", "bn2."): value for key, value in second.items()})
    in_channels, out_channels = first["conv1.weight"].shape[1], second["conv1.weight"].shape[0]
    like = first["conv1.weight"]
    generator = torch.Generator().manual_seed(morphism.seed)
    # The projection's BN starts at weight 0 and bias 0: the skip adds exactly zero until training opens it.
    merged["downsample.0.weight"] = _kaiming((out_channels, in_channels, 1, 1), like, generator)
    merged.update(_batch_norm(out_channels, like, 0.0, 0.0, "downsample.1"))
    blocks[morphism.block : morphism.block + 2] = [merged]


def _enlarge_kernel(parts: _Parts, morphism: Morphism, parent: ArchSpec) -> None:
    kind = parent.stages[morphism.stage - 1].blocks[morphism.block].kind
    spatial = {"conv": ("conv1",), "basic": ("conv1", "conv2"), "bottleneck": ("conv2",)}[kind]
    block = parts.stages[morphism.stage - 1][morphism.block]
    for layer in spatial:
        # A ring of zeros around the kernel plus one more pixel of padding: same window centre, same sum.
        block[f"{layer}.weight"] = F.pad(block[f"{layer}.weight"], (1, 1, 1, 1))


# ---- public API -----------------------------------------------------------------------------------------
def apply_morphism(spec: ArchSpec, state_dict: Tensors, morphism: Morphism) -> tuple[ArchSpec, Tensors]:
    """The child's spec and a state dict for build_model(child) that computes the parent's function."""
    child = apply_to_spec(spec, morphism)
    parts = _split(spec, state_dict)
    if morphism.op in ("deepen_conv", "deepen_residual"):
        _deepen(parts, morphism, child)
    elif morphism.op == "widen":
        _widen(parts, morphism, spec)
    elif morphism.op == "add_skip":
        _add_skip(parts, morphism)
    else:
        _enlarge_kernel(parts, morphism, spec)
    return child, _join(parts)


def apply_morphisms(
    spec: ArchSpec, state_dict: Tensors, morphisms: Sequence[Morphism]
) -> tuple[ArchSpec, Tensors]:
    for morphism in morphisms:
        spec, state_dict = apply_morphism(spec, state_dict, morphism)
    return spec, state_dict
