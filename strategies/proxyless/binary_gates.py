"""ProxylessNAS binary gates over an NNI model space's LayerChoices, without NNI 3.0's extra work.

NNI 3.0's `ProxylessMixedLayer` computes every candidate and an architecture gradient on *every* backward
(its `_ProxylessFunction` tests `needs_input_grad[0]`, the constant path function, so the shortcut never
fires), computes weight gradients during architecture steps, and syncs the device once per choice per step.
Here the two phases are separate:

- weight phase: one path per label is sampled from softmax(alpha) (one multinomial and one sync for all
  labels); each gate runs only its sampled candidate, so the network *is* the plain sampled path.
- arch phase: weights are frozen by the caller; each gate adds the binary-gate gradient estimator
  dL/dalpha_i = sum_j <dL/dy, o_j> p_j (delta_ij - p_i) through the identity
  y = o_s + sum_j (p_j - stopgrad(p_j)) * stopgrad(o_j): its value is o_s exactly, its gradient is the
  estimator. "two_path" (the official ProxylessNAS) evaluates two sampled candidates with p renormalised
  over them; "full" evaluates all N (NNI's "full_v2").

Choices that share a label share one alpha and one sampled index (the activation of a block is one
decision at three sites). A Repeat whose depth is one choice is one more label: its candidates are the
depths, candidate d being "the first d blocks" (BinaryGateRepeat).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .settings import GradientEstimator


class GateBank(nn.Module):
    """The architecture parameters (one alpha vector per label) and the current sample of every gate."""

    def __init__(self, candidates: dict[str, list]):
        super().__init__()
        self.labels = list(candidates)
        self.candidate_values = {label: list(values) for label, values in candidates.items()}
        self.alpha = nn.ParameterDict(
            {label: nn.Parameter(torch.zeros(len(values))) for label, values in candidates.items()}
        )
        self.mode: Literal["weight", "arch", "argmax"] = "argmax"
        self.estimator: GradientEstimator = "two_path"
        self.active: dict[str, int] = {}  # label -> index of the candidate whose output flows forward
        self.evaluated: dict[str, list[int]] = {}  # label -> candidates whose outputs feed the estimator

    def probabilities(self, label: str) -> torch.Tensor:
        return torch.softmax(self.alpha[label], dim=0)

    def padded_probabilities(self) -> torch.Tensor:
        """labels x max candidates, on the host, in one transfer (padding gets probability 0)."""
        width = max(len(values) for values in self.candidate_values.values())
        with torch.no_grad():
            padded = torch.stack(
                [F.pad(self.alpha[label], (0, width - len(self.alpha[label])), value=-math.inf) for label in self.labels]
            )
            return torch.softmax(padded, dim=1).cpu()

    def gate_probabilities(self) -> dict[str, list[float]]:
        probs = self.padded_probabilities()
        return {label: probs[row, : len(self.candidate_values[label])].tolist() for row, label in enumerate(self.labels)}

    def ranking_probabilities(self) -> dict[str, dict]:
        """{label: {candidate value: probability}}, softmax in float64: float32 can round two different alphas to
        one probability, and a top-k ranking must keep the argmax (the alphas' order) first."""
        with torch.no_grad():
            return {label: dict(zip(self.candidate_values[label],
                                    torch.softmax(self.alpha[label].detach().double().cpu(), 0).tolist()))
                    for label in self.labels}

    def argmax_indices(self) -> dict[str, int]:
        with torch.no_grad():
            indices = torch.stack([self.alpha[label].argmax() for label in self.labels]).tolist()
        return dict(zip(self.labels, indices))

    def argmax_sample(self) -> dict:
        """The paper's final architecture: the highest architecture parameter in every choice."""
        return {label: self.candidate_values[label][index] for label, index in self.argmax_indices().items()}

    @torch.no_grad()
    def resample(
        self,
        mode: Literal["weight", "arch", "argmax"],
        generator: torch.Generator | None = None,
        pinned: dict[str, int] | None = None,
    ) -> None:
        """Draw the paths of the next step; `pinned` (label -> index) fixes the active path of some labels."""
        self.mode = mode
        if mode == "argmax":
            self.active = self.argmax_indices()
            self.evaluated = {label: [index] for label, index in self.active.items()}
            return
        # All labels in one host transfer and one batched multinomial, not one device sync per choice.
        probs = self.padded_probabilities()
        draws = 2 if mode == "arch" and self.estimator == "two_path" else 1
        picks = torch.multinomial(probs, draws, replacement=False, generator=generator).tolist()
        # Official ProxylessNAS: of the two sampled paths, the active one is drawn by renormalised p.
        second = torch.rand(len(self.labels), generator=generator).tolist()
        for row, label in enumerate(self.labels):
            if pinned and label in pinned:
                # Keep the estimator's second path a sample, different from the pinned one.
                picks[row] = [pinned[label]] + [i for i in picks[row] if i != pinned[label]][: draws - 1]
                if len(picks[row]) < draws:
                    picks[row].append(next(i for i in range(probs.shape[1]) if i != pinned[label] and probs[row, i] > 0))
                second[row] = 0.0  # the first of the pair is active
            if mode == "weight":
                self.active[label] = picks[row][0]
                self.evaluated[label] = [picks[row][0]]
            elif draws == 2:
                first, other = picks[row]
                p_first = probs[row, first] / (probs[row, first] + probs[row, other])
                self.active[label] = first if second[row] < p_first else other
                self.evaluated[label] = [first, other]
            else:  # full estimator: the active path is one sample, the estimator sees all candidates
                self.active[label] = picks[row][0]
                self.evaluated[label] = list(range(len(self.candidate_values[label])))


class _BankMember(nn.Module):
    """A gate that reads its label's state from the shared GateBank."""

    _bank: list[GateBank]  # a list so the bank is not registered as a submodule of every gate

    @property
    def bank(self) -> GateBank:
        return self._bank[0]


class BinaryGateChoice(_BankMember):
    """Stands in for one NNI LayerChoice: candidates keep their names, the decision lives in the bank."""

    def __init__(self, label: str, names: list, candidates: list[nn.Module], bank: GateBank):
        super().__init__()
        self.label = label
        self.names = list(names)
        self.candidates = nn.ModuleList(candidates)
        self._bank = [bank]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bank = self.bank
        active = bank.active[self.label]
        if bank.mode != "arch":
            return self.candidates[active](x)
        evaluated = bank.evaluated[self.label]
        # The other candidates run first: an in-place candidate (ReLU) would otherwise change their input.
        with torch.no_grad():
            others = [self.candidates[index](x) for index in evaluated if index != active]
        output = self.candidates[active](x)
        return _BinaryGateGradient.apply(bank.alpha[self.label], tuple(evaluated), active, output, *others)


class _BinaryGateGradient(torch.autograd.Function):
    """Identity on the active path's output; its backward adds the binary-gate estimator to alpha's grad.

    Only dot products <dL/dy, o_j> happen in backward, so the estimator adds no elementwise work to the
    forward graph.
    """

    @staticmethod
    def forward(ctx, alpha, evaluated, active, output, *others):
        ctx.evaluated, ctx.active = evaluated, active
        ctx.save_for_backward(alpha, output, *others)
        return output.detach()

    @staticmethod
    def backward(ctx, grad_output):
        alpha, output, *others = ctx.saved_tensors
        grad_alpha = None
        if ctx.needs_input_grad[0]:
            other_outputs = iter(others)
            paths = [output if index == ctx.active else next(other_outputs) for index in ctx.evaluated]
            binary_grads = torch.stack([(grad_output * path).sum() for path in paths])
            index = torch.tensor(ctx.evaluated, device=alpha.device)
            probs = torch.softmax(alpha[index], dim=0)
            # dL/dalpha_i = sum_j b_j p_j (delta_ij - p_i) = p_i (b_i - sum_j b_j p_j), over evaluated paths.
            grad_sub = probs * (binary_grads - (binary_grads * probs).sum())
            grad_alpha = torch.zeros_like(alpha).index_add_(0, index, grad_sub)
        return (grad_alpha, None, None, grad_output) + (None,) * len(others)


class BinaryGateRepeat(_BankMember):
    """Stands in for one NNI Repeat whose depth is one choice: the first `depth` blocks, the depth from the bank.

    In the arch phase the evaluated depths' outputs all come from one pass through the deepest of them; the
    gradient flows along the active depth only, as in BinaryGateChoice.
    """

    def __init__(self, label: str, depths: list[int], blocks: list[nn.Module], bank: GateBank):
        super().__init__()
        self.label = label
        self.depths = list(depths)
        self.blocks = nn.ModuleList(blocks)
        self._bank = [bank]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bank = self.bank
        active = bank.active[self.label]
        depth = self.depths[active]
        if bank.mode != "arch":
            for block in self.blocks[:depth]:
                x = block(x)
            return x
        evaluated = bank.evaluated[self.label]
        wanted = {self.depths[index] for index in evaluated if index != active}
        # Clones: a block that works in place on its input would otherwise overwrite a kept output.
        kept = {0: x.detach().clone()} if 0 in wanted else {}
        for count, block in enumerate(self.blocks[:depth], start=1):
            x = block(x)
            if count in wanted:
                kept[count] = x.detach().clone()
        deepest = max(wanted, default=depth)
        if deepest > depth:
            deeper = x.detach().clone()
            with torch.no_grad():  # depths past the active one feed only the estimator
                for count in range(depth + 1, deepest + 1):
                    deeper = self.blocks[count - 1](deeper)
                    if count in wanted:
                        kept[count] = deeper if count == deepest else deeper.clone()
        others = [kept[self.depths[index]] for index in evaluated if index != active]
        return _BinaryGateGradient.apply(bank.alpha[self.label], tuple(evaluated), active, x, *others)


def install_binary_gates(model: nn.Module) -> GateBank:
    """Replace every NNI LayerChoice in `model` by a BinaryGateChoice, and every Repeat whose depth is a choice
    by a BinaryGateRepeat; return the shared GateBank."""
    from nni.mutable import Categorical, Mutable
    from nni.nas.nn.pytorch import LayerChoice, Repeat

    choices = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, LayerChoice) or (isinstance(module, Repeat) and isinstance(module.depth_choice, Mutable))
    ]
    if not choices:
        raise ValueError("the model space has no LayerChoice or Repeat; there is nothing for ProxylessNAS to search.")
    candidates: dict[str, list] = {}
    for name, module in choices:
        if isinstance(module, Repeat) and not isinstance(module.depth_choice, Categorical):
            raise ValueError(
                f"the depth of Repeat {name!r} is the expression {module.depth_choice!r}; binary gates take a depth "
                "that is one choice: a (min, max) range or nni.choice(label, [depths])."
            )
        label = module.label
        values = list(module.names) if isinstance(module, LayerChoice) else list(module.depth_choice.values)
        if candidates.setdefault(label, values) != values:
            raise ValueError(f"choices labelled {label!r} have different candidates; give them distinct labels.")
    bank = GateBank(candidates)
    # Innermost first (reversed pre-order): a module's path stays valid while the choices inside it change.
    for name, module in reversed(choices):
        if isinstance(module, LayerChoice):
            gate = BinaryGateChoice(module.label, module.names, [module[key] for key in module.names], bank)
        else:
            gate = BinaryGateRepeat(module.label, candidates[module.label], list(module.blocks), bank)
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attribute, gate)
    return bank
