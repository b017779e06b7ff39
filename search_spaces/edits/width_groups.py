"""Width groups of an ArchSpec: sets of channels that must keep one width, and who writes and reads them.

A residual stream (the stem output, then every identity block's last BN added onto it; a projection block
starts a new stream with its last BN and its `downsample.1`) is one group; each inner width of a residual
block is its own group; a conv block's output starts a new stream. MorphNet's width step narrows or widens
whole groups; trainers/regularizers.py prices the same groups for MorphNet's FLOP penalty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..builder import build_model
from ..spec import ArchSpec

STREAM, INNER = "stream", "inner"
STEM_SLOT = (0, 0, 0)  # a WidthGroup slot meaning stem.out_channels; blocks are (stage >= 1, block, width index)


@dataclass
class WidthGroup:
    name: str  # the first BN of the group, e.g. "bn1", "layer2.0.bn1"
    role: str  # STREAM or INNER
    width: int
    producers: list[tuple[str, str]] = field(default_factory=list)  # (conv, BN) writing these channels
    consumers: list[str] = field(default_factory=list)  # convs / the fc reading them as input channels
    slots: list[tuple[int, int, int]] = field(default_factory=list)  # where the width sits in the spec
    block: tuple[int, int] | None = None  # INNER: the (stage, block) it belongs to
    removable: bool = False  # INNER of an identity-shortcut block: at zero width the block goes


def width_groups(spec: ArchSpec) -> list[WidthGroup]:
    """The groups in forward order of their first producer."""
    stream = WidthGroup("bn1", STREAM, spec.stem.out_channels, [("conv1", "bn1")], slots=[STEM_SLOT])
    groups = [stream]
    for stage_index, block_index, block in spec.iter_blocks():
        prefix = f"layer{stage_index}.{block_index}"
        count = len(block.widths)
        if not block.residual:
            stream.consumers.append(f"{prefix}.conv1")
            stream = WidthGroup(f"{prefix}.bn1", STREAM, block.widths[0], [(f"{prefix}.conv1", f"{prefix}.bn1")],
                                slots=[(stage_index, block_index, 0)])
            groups.append(stream)
            continue
        stream.consumers.append(f"{prefix}.conv1")
        previous = stream
        for index in range(count - 1):
            inner = WidthGroup(
                f"{prefix}.bn{index + 1}", INNER, block.widths[index],
                [(f"{prefix}.conv{index + 1}", f"{prefix}.bn{index + 1}")],
                consumers=[f"{prefix}.conv{index + 2}"], slots=[(stage_index, block_index, index)],
                block=(stage_index, block_index), removable=not block.projection,
            )
            groups.append(inner)
        last = (f"{prefix}.conv{count}", f"{prefix}.bn{count}")
        if block.projection:
            previous.consumers.append(f"{prefix}.downsample.0")
            stream = WidthGroup(f"{prefix}.bn{count}", STREAM, block.out_channels,
                                [last, (f"{prefix}.downsample.0", f"{prefix}.downsample.1")])
            groups.append(stream)
        else:
            stream.producers.append(last)
        stream.slots.append((stage_index, block_index, count - 1))
    stream.consumers.append("fc")
    return groups


def group_scales(groups: list[WidthGroup], state_dict: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per group, per channel: max over its BNs of |gamma| (MorphNet's grouping default)."""
    scales = []
    for group in groups:
        gammas = torch.stack([state_dict[f"{bn}.weight"].detach().abs().float().cpu() for _, bn in group.producers])
        scales.append(gammas.amax(0))
    return scales


def spec_with_widths(spec: ArchSpec, groups: list[WidthGroup], widths: dict[str, int]) -> ArchSpec:
    """`spec` with each named group's width set (groups not named keep theirs)."""
    stem = spec.stem
    stages = [list(stage.blocks) for stage in spec.stages]
    for group in groups:
        width = widths.get(group.name, group.width)
        for stage_index, block_index, width_index in group.slots:
            if (stage_index, block_index, width_index) == STEM_SLOT:
                stem = replace(stem, out_channels=width)
                continue
            block = stages[stage_index - 1][block_index]
            new_widths = list(block.widths)
            new_widths[width_index] = width
            stages[stage_index - 1][block_index] = replace(block, widths=tuple(new_widths))
    return replace(
        spec, stem=stem,
        stages=tuple(replace(stage, blocks=tuple(blocks)) for stage, blocks in zip(spec.stages, stages)),
    )


def resize_state_dict(
    new_spec: ArchSpec,
    groups: list[WidthGroup],
    kept: dict[str, torch.Tensor],
    state_dict: dict[str, torch.Tensor],
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The state dict of `new_spec`: each group's `kept` channels (old indices, in order) come first with their
    old weights; channels beyond them are fresh (timm init: kaiming convs, BN weight 1, bias 0, default stats).

    `groups` describe the old spec, whose module names `new_spec` shares (only widths differ).
    """
    with torch.random.fork_rng(devices=[]):  # fresh channels are seeded without touching the global RNG
        torch.manual_seed(seed)
        fresh = build_model(new_spec, zero_init_last=False).state_dict()
    rows: dict[str, torch.Tensor] = {}
    columns: dict[str, torch.Tensor] = {}
    for group in groups:
        for conv, bn in group.producers:
            rows[conv] = rows[bn] = kept[group.name]
        for consumer in group.consumers:
            columns[consumer] = kept[group.name]
    result = {}
    for key, new in fresh.items():
        old = state_dict[key]
        module = key.rsplit(".", 1)[0]
        if new.dim() == 0:
            result[key] = old.clone()
            continue
        piece, target = old, [slice(None)] * new.dim()
        for dim, index in ((0, rows.get(module)), (1, columns.get(module))):
            if index is not None and dim < new.dim():
                piece = piece.index_select(dim, index.to(old.device))
                target[dim] = slice(0, len(index))
        new = new.to(device=old.device, dtype=old.dtype)
        new[tuple(target)] = piece
        result[key] = new
    return result
