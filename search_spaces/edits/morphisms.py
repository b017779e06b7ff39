"""NASH network morphisms on (ArchSpec, state_dict): the child starts computing exactly what its parent did.

Each op edits the per-block dicts of `state_dicts.BlockStates` (one function per op, WEIGHT_OPS, keyed like
morphism_ops.OPS); the join renumbers the blocks after an insertion or a merge. Input dicts and tensors are
never modified; tensors an op does not touch are shared with the parent's dict rather than copied.

Exactness holds in eval mode with the parent's running BN statistics (train-mode BN renormalises by batch
statistics, which an inserted identity layer does not reproduce).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import torch

from ..spec import ArchSpec
from .morphism_ops import MORPHISM_OPS, Morphism, apply_to_spec, next_block
from .state_dicts import STEM_LAYERS, BlockStates, Tensors, enlarge_kernel, fresh_batch_norm, kaiming_conv

# Per (block kind, width index): the layers whose output channels make that width.
PRODUCERS: dict[tuple[str, int], tuple[str, ...]] = {
    ("conv", 0): ("conv1", "bn1"),
    ("basic", 0): ("conv1", "bn1"),
    ("basic", 1): ("conv2", "bn2", "downsample.0", "downsample.1"),
    ("resbuilder", 0): ("conv1", "bn1"),
    ("resbuilder", 1): ("conv2", "bn2", "downsample.0", "downsample.1"),
    ("bottleneck", 0): ("conv1", "bn1"),
    ("bottleneck", 1): ("conv2", "bn2"),
    ("bottleneck", 2): ("conv3", "bn3", "downsample.0", "downsample.1"),
}
INNER_CONSUMERS = {("basic", 0): "conv2", ("resbuilder", 0): "conv2", ("bottleneck", 0): "conv2", ("bottleneck", 1): "conv3"}


def _dirac(channels: int, kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    weight = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=like.dtype, device=like.device)
    torch.nn.init.dirac_(weight)
    return weight


# ---- the ops --------------------------------------------------------------------------------------------
def _deepen(parts: BlockStates, morphism: Morphism, parent: ArchSpec, child: ArchSpec) -> None:
    new_spec = child.stages[morphism.stage - 1].blocks[morphism.block]
    channels, kernel_size = new_spec.widths[0], new_spec.kernel_size
    like = parts.like
    if new_spec.kind == "conv":
        # BN(x) = x in eval: (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0 (eps is BatchNorm2d's default 1e-5).
        block = {"conv1.weight": _dirac(channels, kernel_size, like)}
        block.update(fresh_batch_norm(channels, like, math.sqrt(1.0 + 1e-5), 0.0, "bn1"))
    else:
        # bn2's zero weight and bias make the branch add exactly zero; the convs get a real init so that the
        # gradient on bn2's weight is informative and the block can learn once it opens.
        generator = torch.Generator().manual_seed(morphism.seed)
        shape = (channels, channels, kernel_size, kernel_size)
        block = {"conv1.weight": kaiming_conv(shape, like, generator), "conv2.weight": kaiming_conv(shape, like, generator)}
        block.update(fresh_batch_norm(channels, like, 1.0, 0.0, "bn1"))
        block.update(fresh_batch_norm(channels, like, 0.0, 0.0, "bn2"))
    parts.stages[morphism.stage - 1].insert(morphism.block, block)


def _widen(parts: BlockStates, morphism: Morphism, parent: ArchSpec, child: ArchSpec) -> None:
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
    parts: BlockStates, parent: ArchSpec, stage: int, block: int, width_key: tuple[str, int]
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


def _add_skip(parts: BlockStates, morphism: Morphism, parent: ArchSpec, child: ArchSpec) -> None:
    blocks = parts.stages[morphism.stage - 1]
    first, second = blocks[morphism.block], blocks[morphism.block + 1]
    merged = dict(first)
    # The second conv block's conv1/bn1 become the basic block's conv2/bn2.
    merged.update({key.replace("conv1.", "conv2.").replace("bn1.", "bn2."): value for key, value in second.items()})
    in_channels, out_channels = first["conv1.weight"].shape[1], second["conv1.weight"].shape[0]
    like = first["conv1.weight"]
    generator = torch.Generator().manual_seed(morphism.seed)
    # The projection's BN starts at weight 0 and bias 0: the skip adds exactly zero until training opens it.
    merged["downsample.0.weight"] = kaiming_conv((out_channels, in_channels, 1, 1), like, generator)
    merged.update(fresh_batch_norm(out_channels, like, 0.0, 0.0, "downsample.1"))
    blocks[morphism.block : morphism.block + 2] = [merged]


def _enlarge_kernel(parts: BlockStates, morphism: Morphism, parent: ArchSpec, child: ArchSpec) -> None:
    kind = parent.stages[morphism.stage - 1].blocks[morphism.block].kind
    spatial = {"conv": ("conv1",), "basic": ("conv1", "conv2"), "resbuilder": ("conv1", "conv2"),
               "bottleneck": ("conv2",)}[kind]
    block = parts.stages[morphism.stage - 1][morphism.block]
    for layer in spatial:
        # A ring of zeros around the kernel plus one more pixel of padding: same window centre, same sum.
        weight = block[f"{layer}.weight"]
        block[f"{layer}.weight"] = enlarge_kernel(weight, weight.shape[-1] + 2)


# op -> how it edits the parent's per-block tensors (parts, morphism, parent spec, child spec), in place
WeightOp = Callable[[BlockStates, Morphism, ArchSpec, ArchSpec], None]
WEIGHT_OPS: dict[str, WeightOp] = {
    "deepen_conv": _deepen,
    "deepen_residual": _deepen,
    "widen": _widen,
    "add_skip": _add_skip,
    "enlarge_kernel": _enlarge_kernel,
}
if tuple(WEIGHT_OPS) != MORPHISM_OPS:  # an op added to one table and not the other would fail only when drawn
    raise ImportError("morphisms.WEIGHT_OPS and morphism_ops.OPS name different ops; give every op both rules.")


# ---- public API -----------------------------------------------------------------------------------------
def apply_morphism(spec: ArchSpec, state_dict: Tensors, morphism: Morphism) -> tuple[ArchSpec, Tensors]:
    """The child's spec and a state dict for build_model(child) that computes the parent's function."""
    child = apply_to_spec(spec, morphism)
    parts = BlockStates.split(spec, state_dict)
    WEIGHT_OPS[morphism.op](parts, morphism, spec, child)
    return child, parts.join()


def apply_morphisms(
    spec: ArchSpec, state_dict: Tensors, morphisms: Sequence[Morphism]
) -> tuple[ArchSpec, Tensors]:
    for morphism in morphisms:
        spec, state_dict = apply_morphism(spec, state_dict, morphism)
    return spec, state_dict
