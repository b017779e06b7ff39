"""The k most probable architectures of independent categorical choices, best first, without the product space.

An architecture picks one value per label; with independent gates its probability is the product of the
picked values' probabilities. ResNet-50's full scope has 32 labels (2^16 * 3^16 paths), so the k best are
enumerated from per-label sorted lists with a heap instead of scoring every path.

Torch- and NNI-free: the ProxylessNAS trial, `resnas export --top` and NNI-side strategies read it alike.
`path_state_dict` picks one path's weights out of a supernet's state dict by name (any tensor type).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, TypeVar

TOP_ARCHITECTURES_FILE = "top_architectures.json"  # in a ProxylessNAS trial's output folder
TOP_ARCHITECTURES_FORMAT = "resnas-top-architectures"
Tensor = TypeVar("Tensor")


@dataclass(frozen=True)
class RankedArchitecture:
    """One architecture of the top k: its sample (label -> value, the labels in the given order)."""

    rank: int  # 1 = the argmax of every label
    sample: dict[str, Any]
    probability: float  # the product of the picked values' probabilities
    log_probability: float  # its sum of logs, what the ranking compares (no underflow over many labels)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "probability": self.probability, "log_probability": self.log_probability,
                "sample": dict(self.sample)}


def top_k_architectures(probabilities: Mapping[str, Mapping[Any, float]], k: int) -> list[RankedArchitecture]:
    """The k most probable architectures of {label: {value: probability}}, most probable first.

    Rank 1 is the argmax of every label. Fewer than k come back when the space holds fewer. Ties keep the
    given order: between equal values of one label the earlier one ranks first (what torch's argmax picks),
    and between equal products the architecture whose picks come earlier in the per-label order.
    Probabilities need not sum to one per label (a label of a single value is a fixed decision).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}; ask for at least one architecture.")
    labels = list(probabilities)
    # Per label: (value, probability, log) sorted best first; sorted() is stable, so ties keep the given order.
    ranked = [_sorted_choices(label, probabilities[label]) for label in labels]

    def log_of(picks: tuple[int, ...]) -> float:
        # Rounded, so products equal in exact arithmetic (0.6 * 0.2 and 0.4 * 0.3) tie instead of being
        # ordered by the last bit of their logs; ties then go by the picks, as documented.
        return round(math.fsum(ranked[position][pick][2] for position, pick in enumerate(picks)), 12)

    # Each pick tuple has one parent: itself with its last non-zero position stepped back. So successors step
    # only positions at or after the one last stepped, and no tuple is pushed twice (no visited set needed).
    start = (0,) * len(labels)
    heap: list[tuple[float, tuple[int, ...], int]] = [(-log_of(start), start, 0)]
    found: list[RankedArchitecture] = []
    while heap and len(found) < k:
        negative_log, picks, last_stepped = heapq.heappop(heap)
        sample = {label: ranked[position][pick][0] for position, (label, pick) in enumerate(zip(labels, picks))}
        probability = math.prod(ranked[position][pick][1] for position, pick in enumerate(picks))
        found.append(RankedArchitecture(len(found) + 1, sample, probability, -negative_log))
        for position in range(last_stepped, len(labels)):
            if picks[position] + 1 < len(ranked[position]):
                successor = picks[:position] + (picks[position] + 1,) + picks[position + 1:]
                heapq.heappush(heap, (-log_of(successor), successor, position))
    return found


def path_state_dict(
    supernet: Mapping[str, Tensor],
    gate_labels: Mapping[str, str],
    candidates: Mapping[str, Sequence[Any]],
    sample: Mapping[str, Any],
) -> dict[str, Tensor]:
    """The weights of one path of a binary-gate supernet, named as `build_model` names that path's network.

    gate_labels: gate module name -> its label ("layer4.0.conv2" -> "layer4_0_kernel"); candidates: label ->
    its values in the gate's candidate order. A gate's chosen candidate `P.candidates.I.x` becomes `P.x` (what
    a frozen LayerChoice leaves at P); the other candidates are dropped; every other tensor is kept.
    """
    chosen = {}
    for module, label in gate_labels.items():
        if sample.get(label) not in candidates[label]:
            raise ValueError(f"the sample has no candidate of {label} for gate {module}; pick one of "
                             f"{list(candidates[label])}.")
        chosen[module] = list(candidates[label]).index(sample[label])
    path: dict[str, Tensor] = {}
    for name, tensor in supernet.items():
        module, marker, rest = name.partition(".candidates.")
        if marker and module in chosen:
            index, _, tail = rest.partition(".")
            if int(index) == chosen[module]:
                path[f"{module}.{tail}"] = tensor
        else:
            path[name] = tensor
    return path


def _sorted_choices(label: str, choices: Mapping[Any, float]) -> list[tuple[Any, float, float]]:
    if not choices:
        raise ValueError(f"label {label!r} has no values; give every label at least one value with its probability.")
    for value, probability in choices.items():
        if not (isinstance(probability, (int, float)) and 0.0 <= probability <= 1.0):
            raise ValueError(f"{label}={value!r} has probability {probability!r}; give probabilities in [0, 1].")
    entries = [(value, float(p), math.log(p) if p > 0 else -math.inf) for value, p in choices.items()]
    return sorted(entries, key=lambda entry: -entry[1])


__all__ = ["TOP_ARCHITECTURES_FILE", "RankedArchitecture", "path_state_dict", "top_k_architectures"]
