"""Parameters, FLOPs and MACs of a spec or module, per layer and total (torch's FlopCounterMode).

FLOPs count a multiply-add as two (FlopCounterMode's convention); MACs = FLOPs / 2, the papers' unit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .builder import build_model
from .spec import ArchSpec


@dataclass(frozen=True)
class LayerCost:
    name: str
    params: int
    flops: int

    @property
    def macs(self) -> int:
        return self.flops // 2


@dataclass(frozen=True)
class CostReport:
    params: int
    flops: int
    input_size: tuple[int, int, int]
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return self.flops // 2

    def to_dict(self) -> dict:
        data = asdict(self)
        data["macs"] = self.macs
        for layer, row in zip(self.layers, data["layers"]):
            row["macs"] = layer.macs
        return data


@torch.no_grad()
def measure_cost(spec_or_model: ArchSpec | nn.Module, input_size: tuple[int, int, int]) -> CostReport:
    """Cost of one image of `input_size` (C, H, W) through the network, in eval mode."""
    model = build_model(spec_or_model) if isinstance(spec_or_model, ArchSpec) else spec_or_model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
    per_module = counter.get_flop_counts()
    layers = []
    for name, module in model.named_modules():
        if not name or any(True for _ in module.children()):
            continue  # leaves only: containers would count their children twice
        params = sum(p.numel() for p in module.parameters(recurse=False))
        flops = sum(per_module.get(f"{type(model).__name__}.{name}", {}).values())
        if params or flops:
            layers.append(LayerCost(name, params, flops))
    return CostReport(
        params=sum(p.numel() for p in model.parameters()),
        flops=counter.get_total_flops(),
        input_size=tuple(input_size),
        layers=layers,
    )
