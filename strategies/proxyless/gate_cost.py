"""Expected FLOPs of a binary-gate supernet, differentiable in the architecture parameters.

NNI 3.0's Proxyless adds its penalty to the loss in a way that never reaches alpha's gradient; here the
expected cost is sum over labels of softmax(alpha_label) . flops_label + the cost of everything not searched,
an explicit function of alpha.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .binary_gates import BinaryGateChoice, GateBank


def _count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


@torch.no_grad()
def measure_candidate_flops(model: nn.Module, bank: GateBank, input_size: tuple[int, ...]) -> dict:
    """Per label, the FLOPs of each candidate summed over its sites; plus '__base__', the unsearched rest."""
    shapes: dict[BinaryGateChoice, tuple] = {}
    def record_shape(module: nn.Module, args: tuple) -> None:
        shapes.setdefault(module, tuple(args[0].shape))

    hooks = [
        gate.register_forward_pre_hook(record_shape)
        for gate in model.modules()
        if isinstance(gate, BinaryGateChoice)
    ]
    was_training = model.training
    model.eval()
    bank.resample("argmax")
    try:
        total = _count_flops(model, torch.zeros(1, *input_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    per_label = {label: torch.zeros(len(values), dtype=torch.float64) for label, values in bank.candidate_values.items()}
    active_cost = 0
    for gate, shape in shapes.items():
        probe = torch.zeros(shape)
        costs = [_count_flops(candidate, probe) for candidate in gate.candidates]
        per_label[gate.label] += torch.tensor(costs, dtype=torch.float64)
        active_cost += costs[bank.active[gate.label]]
    return {"per_label": per_label, "base": float(total - active_cost)}


def expected_gflops(bank: GateBank, candidate_flops: dict) -> torch.Tensor:
    expected = torch.zeros((), device=next(iter(bank.alpha.values())).device)
    for label, flops in candidate_flops["per_label"].items():
        probs = bank.probabilities(label)
        expected = expected + (probs * flops.to(probs.device, probs.dtype)).sum()
    return (expected + candidate_flops["base"]) / 1e9
