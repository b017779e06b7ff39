"""ResBuilder's architecture edits on (ArchSpec, state_dict): insert a block at random, remove blocks the
LayerLasso has emptied, and MorphNet's width step (Burghoff et al., sections 3.1-3.3 and algorithm 1).

Every edit returns the new spec, a state dict that loads strictly into build_model(new_spec), and a
JSON-able description of what it did. Module names are timm's (layer{s}.{b}.conv1 ...), stage s from 1.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Callable

import torch

from ..cost import measure_cost
from ..spec import ArchSpec, BlockSpec, SpecError
from .state_dicts import BlockStates, Tensors, fresh_batch_norm
from .width_groups import group_scales, resize_state_dict, spec_with_widths, width_groups

INSERTED_KIND = "resbuilder"  # the paper's block: both ReLUs inside the branch, none after the sum
INSERTED_KERNEL = 3
INSERTED_ACTIVATION = "relu"
# Paper section 3.1: weights of mean magnitude 1e-2 keep the new block close to the identity without the
# symmetries of a zero init; for a normal law E|w| = std * sqrt(2 / pi).
INIT_MEAN_ABS = 1e-2
INIT_STD = INIT_MEAN_ABS * math.sqrt(math.pi / 2)
MAX_OMEGA = 1024  # MorphNet never widens a group past 1024 x its alive channels


# ---- block bookkeeping ------------------------------------------------------------------------------------
def _drop_blocks(spec: ArchSpec, state_dict: Tensors, doomed: set[tuple[int, int]]) -> tuple[ArchSpec, Tensors]:
    parts = BlockStates.split(spec, state_dict)
    stages = []
    for stage_index, stage in enumerate(spec.stages, start=1):
        survivors = [index for index in range(len(stage.blocks)) if (stage_index, index) not in doomed]
        parts.stages[stage_index - 1] = [parts.stages[stage_index - 1][index] for index in survivors]
        stages.append(replace(stage, blocks=tuple(stage.blocks[index] for index in survivors)))
    return replace(spec, stages=tuple(stages)), parts.join()


def stream_width(spec: ArchSpec, stage_index: int, position: int) -> int:
    """Channels flowing at `position` of stage `stage_index` (0 = right after its pooling layer)."""
    channels = spec.stem.out_channels
    for index, stage in enumerate(spec.stages, start=1):
        blocks = stage.blocks if index < stage_index else stage.blocks[:position]
        for block in blocks:
            channels = block.out_channels
        if index == stage_index:
            return channels
    raise SpecError(f"stage {stage_index} does not exist; the spec has {len(spec.stages)} stages.")


def _near_identity_block_state(width: int, generator: torch.Generator, like: torch.Tensor) -> Tensors:
    """A resbuilder block's tensors: small random convs and bn2 weight; bn1 and all running stats at BN's
    defaults. bn2's bias is 0, so with a zero bn2 weight the branch would output exactly 0 (the identity)."""

    def small_random(*shape: int) -> torch.Tensor:
        return (torch.randn(shape, generator=generator) * INIT_STD).to(like)

    kernel_shape = (width, width, INSERTED_KERNEL, INSERTED_KERNEL)
    # the small bn2 weight is what keeps the residual branch near zero in train mode too, where bn2
    # normalises the branch to unit variance whatever the conv weights
    return {
        "conv1.weight": small_random(*kernel_shape),
        **fresh_batch_norm(width, like, 1.0, 0.0, "bn1"),
        "conv2.weight": small_random(*kernel_shape),
        **fresh_batch_norm(width, like, small_random(width), 0.0, "bn2"),
    }


# ---- insertion (section 3.1, 3.3) ---------------------------------------------------------------------------
def insert_random_block(
    spec: ArchSpec, state_dict: Tensors, rng: random.Random
) -> tuple[ArchSpec, Tensors, dict[str, Any]]:
    """Insert a near-identity resbuilder block at a random place: a stage uniformly, then a position uniformly.

    Every position keeps the shape (an identity block as wide as the stream there), so any stage of any spec
    works, RB-0Net's and ResNet's alike; nothing goes before the stem or after the head by construction.
    """
    stage_index = rng.randrange(len(spec.stages)) + 1
    position = rng.randrange(len(spec.stages[stage_index - 1].blocks) + 1)
    width = stream_width(spec, stage_index, position)
    block = BlockSpec(INSERTED_KIND, (width, width), INSERTED_KERNEL, INSERTED_ACTIVATION)

    blocks = spec.stages[stage_index - 1].blocks
    new_spec = spec.replace_blocks(stage_index, blocks[:position] + (block,) + blocks[position:])

    parts = BlockStates.split(spec, state_dict)
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    parts.stages[stage_index - 1].insert(position, _near_identity_block_state(width, generator, parts.like))
    new_state = parts.join()
    return new_spec, new_state, {"stage": stage_index, "position": position, "width": width}


# ---- LayerLasso removal (section 3.2, eq. 6) ----------------------------------------------------------------
def conv_mean_abs(state_dict: Tensors, prefix: str, block: BlockSpec) -> list[float]:
    """Mean |w| per weight of each conv on the block's main path (conv1, conv2[, conv3]), not the shortcut."""
    return [float(state_dict[f"{prefix}.conv{index}.weight"].abs().float().mean())
            for index in range(1, len(block.widths) + 1)]


def removable_block_means(spec: ArchSpec, state_dict: Tensors) -> dict[tuple[int, int], list[float]]:
    """(stage, block) -> conv_mean_abs of every block LayerLasso may remove: the identity-shortcut residual
    blocks (a projection changes the shape, so such a block always stays)."""
    return {(stage_index, block_index): conv_mean_abs(state_dict, f"layer{stage_index}.{block_index}", block)
            for stage_index, block_index, block in spec.iter_blocks() if block.residual and not block.projection}


def remove_small_blocks(
    spec: ArchSpec, state_dict: Tensors, tau: float
) -> tuple[ArchSpec, Tensors, list[dict[str, Any]]]:
    """Drop every identity-shortcut block with a conv whose MEAN |w| per weight is below `tau` (eq. 6).

    Eq. (6) reads as a sum of |w| over a conv, but a sum scales with the conv's size: an inserted 3x3 32->32 conv
    at mean |w| 1e-2 sums to ~92, so tau = 1e-3 would need mean |w| < 1.1e-7 and nothing would ever go. The
    authors' code (training.py, `val_per_weight`) divides the sum by the number of weights before comparing
    with tau; so do we. Blocks with a projection change the shape and always stay. Survivors keep their
    tensors (renamed). Each removed entry carries `conv_mean_abs`, the per-conv means it was judged on.
    """
    doomed, removed = set(), []
    for (stage_index, block_index), means in removable_block_means(spec, state_dict).items():
        if min(means) < tau:
            doomed.add((stage_index, block_index))
            removed.append({"stage": stage_index, "position": block_index, "conv_mean_abs": means})
    new_spec, new_state = _drop_blocks(spec, state_dict, doomed)
    return new_spec, new_state, removed


# ---- MorphNet width step (algorithm 1, steps 2-3) -----------------------------------------------------------
def scaled_widths(alive: dict[str, int], omega: Fraction | float) -> dict[str, int]:
    """omega * c' per group, rounded down, at least 1."""
    omega = Fraction(omega)
    return {name: max(1, math.floor(omega * count)) for name, count in alive.items()}


def _breakpoints(alive: dict[str, int], omega_high: Fraction) -> list[Fraction]:
    """Every omega in (0, omega_high] at which some rounded-down width steps up (m / c')."""
    points = {Fraction(m, count) for count in set(alive.values()) for m in range(1, math.floor(omega_high * count) + 1)}
    return sorted(points)


@dataclass(frozen=True)
class WidthBudget:
    """What MorphNet's width step keeps a network under: a cost that grows with the widths, and its limit.
    The paper's is FLOPs <= zeta; a latency target (strategies.latency_budget) is the other."""

    cost: Callable[[ArchSpec], float]
    limit: float
    name: str  # in the info and the error: "FLOPs", "predicted latency (ms)"
    fix: str  # the error's fix: "raise zeta"


def flops_budget(zeta: float, input_size: tuple[int, int, int]) -> WidthBudget:
    return WidthBudget(lambda spec: measure_cost(spec, input_size).flops, zeta, "FLOPs", "raise zeta")


def morphnet_width_step(
    spec: ArchSpec,
    state_dict: Tensors,
    input_size: tuple[int, int, int],
    zeta: float,
    threshold: float,
    seed: int = 0,
    budget: WidthBudget | None = None,
) -> tuple[ArchSpec, Tensors, dict[str, Any]]:
    """New widths from the BN gammas, scaled by the largest omega that keeps FLOPs <= zeta (or, given `budget`,
    its cost within its limit: a latency target).

    c' = alive channels (|gamma| > threshold, max over a group's BNs); an identity block with a dead inner
    width is removed, every other width is at least 1. omega is the largest breakpoint m / c' whose widths
    floor(omega * c') fit the budget; `next_omega`, the next breakpoint, changes a width and breaks it.
    Surviving channels keep their weights (the top ones by |gamma|, in order); extra ones are fresh (`seed`).
    The info's width dicts are keyed by group name (its first BN) in the spec after dead blocks went, which
    is the returned spec's naming too; omega_exact / next_omega_exact are Fraction strings.
    """
    flops_before = measure_cost(spec, input_size).flops
    groups = width_groups(spec)
    alive_counts = [int((scale > threshold).sum()) for scale in group_scales(groups, state_dict)]
    dead_blocks = {group.block for group, count in zip(groups, alive_counts) if group.removable and count == 0}
    removed = [{"stage": stage, "position": position} for stage, position in sorted(dead_blocks)]
    spec, state_dict = _drop_blocks(spec, state_dict, dead_blocks)

    groups = width_groups(spec)
    scales = group_scales(groups, state_dict)
    alive = {group.name: max(1, int((scale > threshold).sum())) for group, scale in zip(groups, scales)}
    budget = budget or flops_budget(zeta, input_size)
    cache: dict[tuple[int, ...], float] = {}

    def cost_at(omega: Fraction) -> float:
        widths = scaled_widths(alive, omega)
        key = tuple(widths.values())
        if key not in cache:
            cache[key] = budget.cost(spec_with_widths(spec, groups, widths))
        return cache[key]

    omega_high = Fraction(1)
    # FLOPs grow without bound in omega; a latency predicted from a table might level off, hence the cap
    while cost_at(omega_high) <= budget.limit and omega_high < MAX_OMEGA:
        omega_high *= 2
    points = _breakpoints(alive, omega_high)
    # The cost is monotone in omega: bisect for the last breakpoint within budget
    low, high = 0, len(points)  # invariant: points[:low] fit, points[high:] do not
    while low < high:
        middle = (low + high) // 2
        if cost_at(points[middle]) <= budget.limit:
            low = middle + 1
        else:
            high = middle
    if low == 0:
        raise ValueError(
            f"the budget of {budget.limit:g} {budget.name} is below the {cost_at(points[0]):g} {budget.name} of this "
            f"net at width 1 everywhere; {budget.fix}."
        )
    omega = points[low - 1]
    widths = scaled_widths(alive, omega)
    new_spec = spec_with_widths(spec, groups, widths)

    kept = {}
    for group, scale in zip(groups, scales):
        count = min(widths[group.name], alive[group.name])
        kept[group.name] = torch.sort(torch.argsort(scale, descending=True, stable=True)[:count]).values
    new_state = resize_state_dict(new_spec, groups, kept, state_dict, seed)
    info = {
        "omega": float(omega),
        "next_omega": float(points[low]),
        "omega_exact": str(omega),  # Fraction strings: floor(omega * c') is exact, floats can miss by one
        "next_omega_exact": str(points[low]),
        "flops_before": flops_before,
        "flops_after": measure_cost(new_spec, input_size).flops,
        "budget": budget.name,
        "cost_after": cost_at(omega),
        "alive_widths": alive,
        "widths": widths,
        "removed_blocks": removed,
    }
    return new_spec, new_state, info
