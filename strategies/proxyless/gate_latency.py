"""Expected latency of a binary-gate supernet from a measured latency table, differentiable in the architecture
parameters, and the official ProxylessNAS latency losses.

NNI 3.0's Proxyless hands its latency penalty the gate probabilities as detached floats, so no gradient of the
penalty reaches alpha. Here, as gate_cost.py does for FLOPs, the expected latency is an explicit function of
softmax(alpha):

    E[LAT] = base + sum over searched blocks of  sum_{k, a} p_kernel(k) p_act(a) LAT(block with kernel k, act a)
                  + sum over depth choices of    sum_d p_depth(d) LAT(first d blocks of the stage)

A scoped ResNet-50 block's kernel and activation are two labels and its latency depends on both, so the term is
p_kernel^T M p_act with M the table's (kernel x activation) entries; `base` is every unsearched part (stem, head,
blocks outside the scope); every part's latency includes the table's part overhead. Loss forms (official code, `grad_reg_loss_type`):

    mul#log:    CE * alpha * (log E[LAT] / log target) ** beta
    add#linear: CE + lambda * (E[LAT] - target) / target
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from search_spaces.choices import DepthChoices, ScopeChoices
from search_spaces.errors import LatencyTableError
from search_spaces.latency_table import LatencyTable, Part, block_part, network_parts

from .binary_gates import GateBank
from .settings import ProxylessSearchConfig

LOG_RATIO_FLOOR = 1e-6  # mul#log below 1 ms of expected latency: the ratio of logs stops at this (no NaN power)


@dataclass(frozen=True)
class LatencyTerm:
    labels: tuple[str, ...]  # (depth label,) or (kernel label, activation label)
    values_ms: torch.Tensor  # per candidate (1-D), or kernel x activation (2-D), in the bank's candidate order


@dataclass(frozen=True)
class CandidateLatency:
    base_ms: float
    terms: tuple[LatencyTerm, ...]

    def to(self, device: torch.device) -> "CandidateLatency":
        return replace(self, terms=tuple(replace(term, values_ms=term.values_ms.to(device)) for term in self.terms))


def _block_positions(spec, input_size) -> dict[tuple[int, int], Part]:
    """(stage from 1, block) -> the block's part in `spec`."""
    blocks = [part for part in network_parts(spec, input_size) if part.kind == "block"]
    return dict(zip([(stage, index) for stage, index, _ in spec.iter_blocks()], blocks))


def _needed_parts(choices, bank: GateBank, input_size) -> tuple[list[Part], list[tuple[tuple[str, ...], list]]]:
    """Every part the expected latency reads: the base network's, and per term its candidates' parts."""
    spec = choices.base_spec
    positions = _block_positions(spec, input_size)
    terms: list[tuple[tuple[str, ...], list]] = []
    searched: set[tuple[int, int]] = set()
    if isinstance(choices, ScopeChoices):
        for stage, index, block in choices.searched_blocks():
            prefix = f"layer{stage}_{index}"
            labels = (f"{prefix}_kernel", f"{prefix}_act")
            if not all(label in bank.candidate_values for label in labels):
                continue
            shape = positions[(stage, index)].in_shape
            grid = [[block_part(replace(block, kernel_size=int(str(kernel)[1:]), activation=activation), shape)
                     for activation in bank.candidate_values[labels[1]]] for kernel in bank.candidate_values[labels[0]]]
            terms.append((labels, grid))
            searched.add((stage, index))
    elif isinstance(choices, DepthChoices):
        for label, _ in choices.choice_labels():
            if label not in bank.candidate_values:
                continue
            stage = int(label[len("layer"):-len("_depth")])
            blocks = [positions[(stage, index)] for index in range(len(spec.stages[stage - 1].blocks))]
            terms.append(((label,), [blocks[:depth] for depth in bank.candidate_values[label]]))
            searched.update((stage, index) for index in range(len(blocks)))
    else:
        raise LatencyTableError("a latency loss needs a resnas space (ScopedResNet50 or DepthResNet) to read its "
                                "blocks from; drop latency_table for this space.")
    base = [part for part in network_parts(spec, input_size) if part.kind != "block"]
    base += [part for position, part in positions.items() if position not in searched]
    return base, terms


def _flatten(values) -> list[Part]:
    return [part for item in values for part in (_flatten(item) if isinstance(item, list) else [item])]


def _latency_from(table: LatencyTable, base_parts: list[Part], raw_terms: list[tuple[tuple[str, ...], list]]
                  ) -> CandidateLatency:
    """The latency of every candidate of every gate, and of the rest, from `table` (which must hold them all)."""
    overhead = table.overhead_for(base_parts + _flatten([values for _, values in raw_terms]))
    ms = lambda part: table.part_ms(part, overhead=overhead)[0]  # noqa: E731 - a missing entry raises, naming it
    terms = []
    for labels, values in raw_terms:
        if len(labels) == 2:
            grid = [[ms(part) for part in row] for row in values]
        else:  # a depth's value is its blocks' sum (depth 0: nothing)
            grid = [sum(ms(part) for part in blocks) for blocks in values]
        terms.append(LatencyTerm(labels, torch.tensor(grid, dtype=torch.float32)))
    base = sum(ms(part) for part in base_parts)
    return CandidateLatency(float(base), tuple(terms))


def load_candidate_latency(space, bank: GateBank, table_path: str | Path, input_size) -> CandidateLatency:
    """Every candidate's latency (and the rest's) from the table at `table_path`, measuring the parts it lacks into
    it when this machine is the table's device (search_spaces.latency.table_with_parts); elsewhere a missing part
    is an error naming the command that fills it."""
    from search_spaces.latency import table_with_parts

    base_parts, raw_terms = _needed_parts(getattr(space, "choices", None), bank, input_size)
    needed = base_parts + _flatten([values for _, values in raw_terms])
    table = table_with_parts(table_path, needed)
    missing = table.missing(needed)
    if missing:
        raise LatencyTableError(
            f"latency table {table_path} lacks {len(missing)} parts of this space (e.g. `{missing[0].key}`) and "
            f"this machine is not its device ({table.device.describe()}); fill it there with `resnas "
            f"latency-table {table_path} --config YOUR_CONFIG.yml` (the experiment's config: its scope, stem and "
            f"input size).")
    return _latency_from(table, base_parts, raw_terms)


def expected_latency_ms(bank: GateBank, latency: CandidateLatency) -> torch.Tensor:
    """E[latency] in ms under the gates' softmax: a differentiable function of every alpha in a term."""
    expected = torch.zeros((), device=next(iter(bank.alpha.values())).device)
    for term in latency.terms:
        values = term.values_ms.to(expected.device)
        if len(term.labels) == 1:
            expected = expected + (bank.probabilities(term.labels[0]) * values).sum()
        else:
            expected = expected + bank.probabilities(term.labels[0]) @ values @ bank.probabilities(term.labels[1])
    return expected + latency.base_ms


def latency_loss(ce: torch.Tensor, expected_ms: torch.Tensor, config: ProxylessSearchConfig) -> torch.Tensor:
    """The architecture loss with the official ProxylessNAS latency term (config.latency_loss)."""
    target = float(config.latency_target_ms)
    if config.latency_loss == "add#linear":
        return ce + config.latency_lambda * (expected_ms - target) / target
    ratio = (torch.log(expected_ms) / math.log(target)).clamp_min(LOG_RATIO_FLOOR)
    return ce * config.latency_alpha * ratio ** config.latency_beta


def _term_ms(term: LatencyTerm, indices: tuple[int, ...]) -> float:
    return float(term.values_ms[indices])


def pick_within_target(bank: GateBank, latency: CandidateLatency, target_ms: float) -> tuple[dict, float, bool]:
    """The gates' argmax, then, while its latency is over the target, the cheapest way down: of every switch of one
    term (a block's kernel and activation together, or a stage's depth) to a faster candidate, the one that gives up
    the least log-probability per ms saved. A soft latency loss trades accuracy against latency and may end over
    the target; this keeps the search's preferences and meets it. Returns (sample, its latency in ms, whether it
    is within the target: False when even the fastest candidates are over it)."""
    log_p = {label: torch.log(bank.probabilities(label).detach().cpu().clamp_min(1e-12)) for label in bank.labels}
    chosen = {label: int(index) for label, index in bank.argmax_indices().items()}

    def total() -> float:
        return latency.base_ms + sum(_term_ms(term, tuple(chosen[label] for label in term.labels))
                                     for term in latency.terms)

    while (current := total()) > target_ms:
        best = None  # (log-probability given up per ms saved, term, new indices)
        for term in latency.terms:
            now = tuple(chosen[label] for label in term.labels)
            for other in all_indices(term.values_ms.shape):
                saved = _term_ms(term, now) - _term_ms(term, other)
                if saved <= 0:
                    continue
                given_up = sum(float(log_p[label][i] - log_p[label][j]) for label, i, j in zip(term.labels, now, other))
                if best is None or given_up / saved < best[0]:
                    best = (given_up / saved, term, other)
        if best is None:
            break  # every term at its fastest candidate
        chosen.update(zip(best[1].labels, best[2]))
    sample = {label: bank.candidate_values[label][index] for label, index in chosen.items()}
    return sample, current, current <= target_ms


def all_indices(shape: torch.Size) -> list[tuple[int, ...]]:
    """Every index of a tensor of `shape`, as tuples."""
    return [tuple(int(i) for i in index) for index in torch.cartesian_prod(*[torch.arange(n) for n in shape])
            .reshape(-1, len(shape))]
