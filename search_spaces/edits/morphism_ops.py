"""NASH network morphisms on the ArchSpec alone: where each applies, the child's spec, random draws.

Elsken et al., "Simple and Efficient Architecture Search for CNNs" (NASH): a child network is its parent plus
a few function-preserving changes, so it starts from the parent's weights and needs only a short training.
This module decides *what* changes (spec level), one table entry per op (OPS, each tagged with the paper's
operator kind it implements); `morphisms.py` carries the weights over. It imports no torch so that a tuner
running inside NNI's dispatcher can plan children cheaply.

Sites are addressed like the state dict: `stage` is 1-based (`layer{stage}`), 0 is the stem where an op allows
it (only widen); `block` is the block index in the stage, or the insert position for the deepen ops.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Literal, Sequence

from ..spec import ArchSpec, BlockSpec

MAX_KERNEL_SIZE = 7
DEEPEN_KERNEL_SIZES = (3, 5)
WIDEN_FACTOR_RANGE = (1.5, 2.0)


class MorphismError(ValueError):
    """A morphism that cannot be applied; the message is one sentence naming the fix."""


@dataclass(frozen=True)
class Morphism:
    op: str
    stage: int
    block: int
    kernel_size: int = 3  # deepen_*: kernel of the new layer
    width_index: int = 0  # widen: which of the block's widths (0 for conv blocks and the stem)
    new_width: int = 0  # widen: the width after widening
    seed: int = 0  # seeds widen's channel copies and split, and the random init of new convs

    def __post_init__(self) -> None:
        _check_op(self.op)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Morphism":
        if not isinstance(data, dict):
            raise MorphismError(f"a Morphism must be a JSON object, got {type(data).__name__}.")
        valid = [field.name for field in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise MorphismError(f"Morphism: unknown key {unknown[0]!r}; valid keys are {', '.join(valid)}.")
        missing = [name for name in ("op", "stage", "block") if name not in data]
        if missing:
            raise MorphismError(f"Morphism JSON lacks the key {missing[0]!r}; write it with Morphism.to_dict().")
        return cls(**data)


def _check_op(op: str) -> None:
    if op not in MORPHISM_OPS:
        raise MorphismError(f"unknown morphism {op!r}; use one of {', '.join(MORPHISM_OPS)}.")


# ---- facts about a spec ---------------------------------------------------------------------------------
def _stage(spec: ArchSpec, stage: int, what: str) -> Any:
    if not 1 <= stage <= len(spec.stages):
        raise MorphismError(f"{what}: stage {stage} does not exist; use 1..{len(spec.stages)}.")
    return spec.stages[stage - 1]


def _block(spec: ArchSpec, stage: int, block: int, what: str) -> BlockSpec:
    blocks = _stage(spec, stage, what).blocks
    if not 0 <= block < len(blocks):
        raise MorphismError(f"{what}: layer{stage} has no block {block}; it has {len(blocks)} blocks.")
    return blocks[block]


def _preceding(spec: ArchSpec, stage: int, position: int) -> tuple[str, int]:
    """(activation, channels) of whatever feeds position `position` of `stage`: the closest earlier block, or
    the stem. Pools sit in between at most, and they keep both the sign and the channel count. A "resbuilder"
    block has no activation after its sum: with an identity shortcut and ReLU, x + relu(...) is non-negative
    exactly when x is, so the sign is read further back; with a projection (BN(conv(x)), any sign) the sum is
    reported as "identity", an output of any sign."""
    channels = None
    for stage_index in range(stage, 0, -1):
        blocks = spec.stages[stage_index - 1].blocks
        end = position if stage_index == stage else len(blocks)
        for block in reversed(blocks[:end]):
            channels = channels or block.out_channels
            if block.kind != "resbuilder":
                return block.activation, channels
            if block.projection or block.activation != "relu":
                return "identity", channels
    return spec.stem.activation, channels or spec.stem.out_channels


def next_block(spec: ArchSpec, stage: int, block: int) -> tuple[int, int, BlockSpec] | None:
    """The block that consumes the output of (stage, block) (stage 0 = the stem), or None for the classifier."""
    for stage_index, block_index, candidate in spec.iter_blocks():
        if (stage_index, block_index) > (stage, block):
            return stage_index, block_index, candidate
    return None


def _output_consumer_splittable(spec: ArchSpec, stage: int, block: int) -> bool:
    # Net2Wider splits the consumer's input weights; an identity shortcut has no weights to split.
    following = next_block(spec, stage, block)
    return following is None or following[2].kind == "conv" or following[2].projection


def widenable_indices(spec: ArchSpec, stage: int, block: int) -> list[int]:
    """The width indices of (stage, block) that widen can grow (stage 0, block 0 = the stem)."""
    if stage == 0:
        return [0] if block == 0 and _output_consumer_splittable(spec, 0, 0) else []
    block_spec = spec.stages[stage - 1].blocks[block]
    inner = list(range(len(block_spec.widths) - 1))
    output_ok = (block_spec.kind == "conv" or block_spec.projection) and _output_consumer_splittable(
        spec, stage, block
    )
    return inner + ([len(block_spec.widths) - 1] if output_ok else [])


def current_width(spec: ArchSpec, stage: int, block: int, width_index: int) -> int:
    if stage == 0:
        return spec.stem.out_channels
    return spec.stages[stage - 1].blocks[block].widths[width_index]


def _add_skip_problem(spec: ArchSpec, stage: int, block: int) -> str | None:
    blocks = spec.stages[stage - 1].blocks
    if block + 1 >= len(blocks):
        return f"layer{stage}.{block} has no following block in its stage"
    first, second = blocks[block], blocks[block + 1]
    if first.kind != "conv" or second.kind != "conv":
        return f"layer{stage}.{block} and .{block + 1} are not both conv blocks"
    if first.kernel_size != second.kernel_size or first.activation != second.activation:
        return f"layer{stage}.{block} and .{block + 1} differ in kernel size or activation"
    if second.stride != 1:
        return f"layer{stage}.{block + 1} has stride {second.stride}, a basic block's second conv needs 1"
    return None


# ---- the ops: where each applies and the child's spec ---------------------------------------------------
def _deepen_sites(spec: ArchSpec, op: str) -> list[Morphism]:
    return [
        Morphism(op, stage_index, position)
        for stage_index, stage in enumerate(spec.stages, start=1)
        for position in range(len(stage.blocks) + 1)
        if _preceding(spec, stage_index, position)[0] == "relu"
    ]


def _deepen_spec(spec: ArchSpec, morphism: Morphism) -> ArchSpec:
    op, stage, block = morphism.op, morphism.stage, morphism.block
    stage_spec = _stage(spec, stage, op)
    if not 0 <= block <= len(stage_spec.blocks):
        raise MorphismError(f"{op}: insert position {block} is outside 0..{len(stage_spec.blocks)} of layer{stage}.")
    if morphism.kernel_size < 1 or morphism.kernel_size % 2 == 0:
        raise MorphismError(f"{op}: kernel size {morphism.kernel_size} must be a positive odd integer.")
    activation, channels = _preceding(spec, stage, block)
    if activation != "relu":
        raise MorphismError(
            f"{op}: the input at layer{stage} position {block} comes from a {activation} activation, and the "
            f"new layer is the identity only on non-negative inputs; pick a site from applicable_sites()."
        )
    kind, widths = ("conv", (channels,)) if op == "deepen_conv" else ("basic", (channels, channels))
    new_block = BlockSpec(kind, widths, kernel_size=morphism.kernel_size, activation="relu")
    return spec.replace_blocks(stage, stage_spec.blocks[:block] + (new_block,) + stage_spec.blocks[block:])


def _draw_deepen(spec: ArchSpec, site: Morphism, rng: random.Random) -> Morphism:
    return replace(site, kernel_size=rng.choice(DEEPEN_KERNEL_SIZES))


def _widen_sites(spec: ArchSpec, op: str) -> list[Morphism]:
    sites = [Morphism(op, 0, 0, width_index=index) for index in widenable_indices(spec, 0, 0)]
    for stage_index, block_index, _ in spec.iter_blocks():
        sites += [Morphism(op, stage_index, block_index, width_index=index)
                  for index in widenable_indices(spec, stage_index, block_index)]
    return sites


def _widen_spec(spec: ArchSpec, morphism: Morphism) -> ArchSpec:
    stage, block = morphism.stage, morphism.block
    if stage != 0:
        _block(spec, stage, block, "widen")
    elif block != 0:
        raise MorphismError("widen: the stem is addressed as stage 0, block 0.")
    indices = widenable_indices(spec, stage, block)
    if morphism.width_index not in indices:
        where = "the stem" if stage == 0 else f"layer{stage}.{block}"
        raise MorphismError(
            f"widen: width {morphism.width_index} of {where} cannot be widened exactly (its consumer is an "
            f"identity shortcut, or it does not exist); widenable indices there: {indices or 'none'}."
        )
    width = current_width(spec, stage, block, morphism.width_index)
    if morphism.new_width <= width:
        raise MorphismError(f"widen: new_width {morphism.new_width} must exceed the current width {width}.")
    if stage == 0:
        return replace(spec, stem=replace(spec.stem, out_channels=morphism.new_width))
    block_spec = spec.stages[stage - 1].blocks[block]
    widths = list(block_spec.widths)
    widths[morphism.width_index] = morphism.new_width
    return spec.replace_block(stage, block, replace(block_spec, widths=tuple(widths)))


def _draw_widen(spec: ArchSpec, site: Morphism, rng: random.Random) -> Morphism:
    width = current_width(spec, site.stage, site.block, site.width_index)
    factor = rng.uniform(*WIDEN_FACTOR_RANGE)
    return replace(site, new_width=max(width + 1, round(width * factor)))


def _add_skip_sites(spec: ArchSpec, op: str) -> list[Morphism]:
    return [Morphism(op, stage_index, block_index) for stage_index, block_index, _ in spec.iter_blocks()
            if _add_skip_problem(spec, stage_index, block_index) is None]


def _add_skip_spec(spec: ArchSpec, morphism: Morphism) -> ArchSpec:
    stage, block = morphism.stage, morphism.block
    _block(spec, stage, block, "add_skip")
    problem = _add_skip_problem(spec, stage, block)
    if problem is not None:
        raise MorphismError(f"add_skip: {problem}; pick a site from applicable_sites().")
    blocks = spec.stages[stage - 1].blocks
    first, second = blocks[block : block + 2]
    merged = BlockSpec("basic", (first.widths[0], second.widths[0]), kernel_size=first.kernel_size,
                       activation=first.activation, stride=first.stride, projection=True)
    return spec.replace_blocks(stage, blocks[:block] + (merged,) + blocks[block + 2 :])


def _enlarge_sites(spec: ArchSpec, op: str) -> list[Morphism]:
    return [Morphism(op, stage_index, block_index) for stage_index, block_index, block in spec.iter_blocks()
            if block.kernel_size + 2 <= MAX_KERNEL_SIZE]


def _enlarge_spec(spec: ArchSpec, morphism: Morphism) -> ArchSpec:
    stage, block = morphism.stage, morphism.block
    block_spec = _block(spec, stage, block, "enlarge_kernel")
    if block_spec.kernel_size + 2 > MAX_KERNEL_SIZE:
        raise MorphismError(
            f"enlarge_kernel: layer{stage}.{block} already has kernel {block_spec.kernel_size}; the cap is "
            f"{MAX_KERNEL_SIZE}, pick a block with a smaller kernel."
        )
    return spec.replace_block(stage, block, replace(block_spec, kernel_size=block_spec.kernel_size + 2))


def _keep_site(spec: ArchSpec, site: Morphism, rng: random.Random) -> Morphism:
    return site


# The paper's operator kinds (NASH's ApplyNetMorphs samples uniformly among "deeper", "wider" and "skip");
# "kernel" (enlarge_kernel) is this toolkit's extension, drawn only when the `morphisms` setting names it.
MorphismKind = Literal["deeper", "wider", "skip", "kernel"]
PAPER_KINDS: tuple[MorphismKind, ...] = ("deeper", "wider", "skip")


@dataclass(frozen=True)
class MorphismOp:
    """One op's spec-level rules; the weight rules are morphisms.WEIGHT_OPS, keyed the same way."""

    kind: MorphismKind  # draws pick a kind first, then one of its ops: two deepen forms do not double "deeper"
    sites: Callable[[ArchSpec, str], list[Morphism]]  # every site where the op preserves the function
    child_spec: Callable[[ArchSpec, Morphism], ArchSpec]  # raises MorphismError where it would not
    draw: Callable[[ArchSpec, Morphism, random.Random], Morphism] = _keep_site  # fills the site's free fields


OPS: dict[str, MorphismOp] = {
    "deepen_conv": MorphismOp("deeper", _deepen_sites, _deepen_spec, _draw_deepen),
    "deepen_residual": MorphismOp("deeper", _deepen_sites, _deepen_spec, _draw_deepen),
    "widen": MorphismOp("wider", _widen_sites, _widen_spec, _draw_widen),
    "add_skip": MorphismOp("skip", _add_skip_sites, _add_skip_spec),
    "enlarge_kernel": MorphismOp("kernel", _enlarge_sites, _enlarge_spec),
}
MORPHISM_OPS: tuple[str, ...] = tuple(OPS)  # every op a spec or a setting may name
DEFAULT_MORPHISM_OPS: tuple[str, ...] = tuple(op for op, entry in OPS.items() if entry.kind in PAPER_KINDS)


def applicable_sites(spec: ArchSpec, op: str) -> list[Morphism]:
    """Every site where `op` preserves the function; other fields keep their defaults (so widen sites carry
    new_width=0: set it with dataclasses.replace before applying)."""
    _check_op(op)
    return OPS[op].sites(spec, op)


def apply_to_spec(spec: ArchSpec, morphism: Morphism) -> ArchSpec:
    """The child's spec; raises MorphismError where the morphism would not preserve the function."""
    return OPS[morphism.op].child_spec(spec, morphism)


# ---- random draws (NASH's ApplyNetMorphs) ---------------------------------------------------------------
def ops_by_kind(spec: ArchSpec, ops: Sequence[str]) -> dict[str, list[tuple[str, list[Morphism]]]]:
    """{kind: [(op, its sites), ...]} for the ops among `ops` that have a site on `spec`, in `ops` order."""
    grouped: dict[str, list[tuple[str, list[Morphism]]]] = {}
    for op in ops:
        sites = applicable_sites(spec, op)
        if sites:
            grouped.setdefault(OPS[op].kind, []).append((op, sites))
    return grouped


def draw_morphism(spec: ArchSpec, rng: random.Random, ops: Sequence[str] = DEFAULT_MORPHISM_OPS) -> Morphism:
    """One random morphism as NASH draws them: the kind uniformly among the kinds with a site (by default the
    paper's deeper, wider, skip), then the kind's op uniformly among those with a site (deeper: conv or
    residual form), then the site uniformly. Deepen ops get a kernel from DEEPEN_KERNEL_SIZES; widen grows the
    width by a factor uniform in WIDEN_FACTOR_RANGE (at least by one channel). Every draw gets a seed, so a
    child is reproducible."""
    grouped = ops_by_kind(spec, ops)
    if not grouped:
        raise MorphismError(f"no morphism among {', '.join(ops)} applies to this spec; allow more ops.")
    kind = rng.choice(list(grouped))
    op, sites = rng.choice(grouped[kind])
    site = OPS[op].draw(spec, rng.choice(sites), rng)
    return replace(site, seed=rng.randrange(2**31))


def draw_morphisms(
    spec: ArchSpec, count: int, rng: random.Random, ops: Sequence[str] = DEFAULT_MORPHISM_OPS
) -> tuple[list[Morphism], ArchSpec]:
    """`count` morphisms applied in sequence, each drawn on the spec the previous one produced."""
    morphisms = []
    for _ in range(count):
        morphism = draw_morphism(spec, rng, ops)
        spec = apply_to_spec(spec, morphism)
        morphisms.append(morphism)
    return morphisms, spec
