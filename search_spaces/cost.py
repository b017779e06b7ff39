"""Parameters, FLOPs and MACs of a spec or module, per layer and in total (torch's FlopCounterMode).

FLOPs count a multiply-add as two (FlopCounterMode's convention: a conv is 2*k*k*C_in*C_out*H_out*W_out);
MACs = FLOPs / 2 are the papers' unit (timm quotes ResNet-50 at 4.1 GMACs). Only convolutions and matrix
products are counted; batch norm, activations and pooling are not, as in the papers.

The forward pass runs on the meta device (shapes only, no arithmetic, no memory), so costing a ResNet-50
at 224x224 takes a fraction of a second; a module whose forward cannot run on meta falls back to one
batch-1 forward on its own device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from .builder import build_model
from .spec import ArchSpec, SpecError


@dataclass(frozen=True)
class LayerCost:
    """The cost of one module's own parameters and computation (its children are listed separately)."""

    name: str
    params: int
    flops: int
    macs: int


@dataclass(frozen=True)
class CostReport:
    params: int
    flops: int
    macs: int
    input_size: tuple[int, int, int]
    layers: list[LayerCost] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        return data


def measure_cost(spec_or_model: ArchSpec | nn.Module, input_size: tuple[int, int, int]) -> CostReport:
    """Cost of one image of `input_size` (C, H, W) through the network in eval mode.

    A spec is built on the meta device; a module is left untouched (weights, device and training mode).
    """
    input_size = _check_input_size(input_size)
    if isinstance(spec_or_model, ArchSpec):
        if spec_or_model.in_channels != input_size[0]:
            raise SpecError(
                f"input_size has {input_size[0]} channels but the spec takes {spec_or_model.in_channels}; "
                f"pass input_size=({spec_or_model.in_channels}, H, W)."
            )
        with torch.device("meta"):
            model = build_model(spec_or_model, zero_init_last=False)
    else:
        model = spec_or_model
    was_training = model.training
    model.eval()  # batch-1 BN in train mode fails on 1x1 maps, and eval is what deployment costs
    try:
        counts = _count_on_meta(model, input_size)
        if counts is None:
            counts = _count_on_device(model, input_size)
    finally:
        model.train(was_training)
    return _report(model, counts, input_size)


def _check_input_size(input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(n, int) and n > 0 for n in size):
        raise ValueError(f"input_size {input_size!r} must be (C, H, W), three positive integers, e.g. (3, 32, 32).")
    return size  # type: ignore[return-value]


def _count_on_meta(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int] | None:
    """Per-module FLOPs (children included) from a shapes-only forward, or None if the module refuses meta."""
    # functional_call swaps in meta stand-ins for this call only; the caller's tensors stay where they are.
    stand_ins = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            functional_call(model, stand_ins, (torch.zeros(1, *input_size, device="meta"),), strict=False)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None  # e.g. a forward that builds CPU tensors or reads values (.item()) on the way
    return _flops_by_name(model, counter)


def _count_on_device(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int]:
    tensor = next(model.parameters(), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_size, device=device))
    return _flops_by_name(model, counter)


def _flops_by_name(model: nn.Module, counter: FlopCounterMode) -> dict[str, int]:
    # FlopCounterMode names modules '<RootClass>.<name from named_modules>' and the root '<RootClass>'.
    root = type(model).__name__
    result = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == root:
            result[""] = sum(per_op.values())
        elif key.startswith(root + "."):
            result[key[len(root) + 1 :]] = sum(per_op.values())
    result.setdefault("", counter.get_total_flops())
    return result


def _report(model: nn.Module, flops_by_name: dict[str, int], input_size: tuple[int, int, int]) -> CostReport:
    layers = []
    for name, module in model.named_modules():
        own_params = sum(p.numel() for p in module.parameters(recurse=False))
        # A module's count includes its children's; subtracting them leaves what it computes itself
        # (zero for plain containers, everything for leaves such as conv and fc).
        children_flops = sum(
            flops_by_name.get(f"{name}.{child}" if name else child, 0) for child, _ in module.named_children()
        )
        own_flops = max(0, flops_by_name.get(name, 0) - children_flops)
        if own_params or own_flops:
            layers.append(LayerCost(name or type(model).__name__, own_params, own_flops, own_flops // 2))
    total_flops = flops_by_name[""]
    return CostReport(
        params=sum(p.numel() for p in model.parameters()),
        flops=total_flops,
        macs=total_flops // 2,
        input_size=input_size,
        layers=layers,
    )
