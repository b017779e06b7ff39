"""State-dict surgery every architecture edit shares: a state dict split per block, and fresh layers.

`BlockStates.split(spec, state_dict)` cuts a resnas state dict into the stem, one dict per (stage, block) with
block-relative keys (`conv1.weight`) and the head. An edit inserts, removes or merges entries of
`stages[s]` like list items; `join()` renumbers the blocks, which renames the keys of every block after
an insertion or a removal. Tensors an edit does not touch are shared with the input dict, never copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..spec import ArchSpec

Tensors = dict[str, torch.Tensor]
STEM_LAYERS = ("conv1", "bn1")
HEAD_LAYERS = ("fc",)


class StateDictError(ValueError):
    """A state dict that does not belong to the spec it came with; one sentence naming the fix."""


@dataclass
class BlockStates:
    stem: Tensors
    stages: list[list[Tensors]]  # stages[s - 1][b]: layer{s}.{b}.* with the prefix removed
    head: Tensors

    @classmethod
    def split(cls, spec: ArchSpec, state_dict: Tensors) -> "BlockStates":
        parts = cls({}, [[{} for _ in stage.blocks] for stage in spec.stages], {})
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
                    raise StateDictError(
                        f"state dict key {key!r} is not a resnas key; pass build_model(spec).state_dict()."
                    )
                stage_index, block_index = int(stage), int(block)
                if not (1 <= stage_index <= len(spec.stages)
                        and block_index < len(spec.stages[stage_index - 1].blocks)):
                    raise StateDictError(
                        f"state dict key {key!r} has no block in the spec; pass the spec this state dict belongs to."
                    )
                parts.stages[stage_index - 1][block_index][rest] = tensor
        return parts

    def join(self) -> Tensors:
        joined = dict(self.stem)
        for stage_index, blocks in enumerate(self.stages, start=1):
            for block_index, block in enumerate(blocks):
                joined.update({f"layer{stage_index}.{block_index}.{key}": value for key, value in block.items()})
        joined.update(self.head)
        return joined

    @property
    def like(self) -> torch.Tensor:
        """A tensor whose dtype and device new layers take (the stem conv's weight)."""
        return self.stem["conv1.weight"]


def fresh_batch_norm(channels: int, like: torch.Tensor, weight: float | torch.Tensor, bias: float,
                     prefix: str) -> Tensors:
    """A BatchNorm2d's tensors with running statistics at their defaults (mean 0, var 1, no batches seen)."""
    options = dict(dtype=like.dtype, device=like.device)
    if not isinstance(weight, torch.Tensor):
        weight = torch.full((channels,), weight, **options)
    return {
        f"{prefix}.weight": weight.to(**options),
        f"{prefix}.bias": torch.full((channels,), bias, **options),
        f"{prefix}.running_mean": torch.zeros(channels, **options),
        f"{prefix}.running_var": torch.ones(channels, **options),
        f"{prefix}.num_batches_tracked": torch.tensor(0, dtype=torch.long, device=like.device),
    }


def kaiming_conv(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """builder.init_resnet_weights' scheme (fan_out, relu), drawn from an edit's own seeded generator."""
    fan_out = shape[0] * math.prod(shape[2:])
    weight = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_out)
    return weight.to(dtype=like.dtype, device=like.device)


def enlarge_kernel(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """A conv weight (out, in, k, k) zero-padded to kernel_size x kernel_size: with padding kernel_size // 2 the
    larger conv computes the same function (same window centre, the extra taps multiply by zero). NASH's
    enlarge_kernel morphism and a pretrained start's larger ProxylessNAS candidates both grow kernels this way."""
    grow = kernel_size - weight.shape[-1]
    if grow < 0 or grow % 2:
        raise StateDictError(f"a {weight.shape[-1]}x{weight.shape[-1]} kernel cannot be padded to "
                             f"{kernel_size}x{kernel_size} with the same function; give an odd kernel size of at "
                             f"least {weight.shape[-1]}.")
    ring = grow // 2
    return torch.nn.functional.pad(weight, (ring, ring, ring, ring))
