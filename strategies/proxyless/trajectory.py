"""The architecture parameters' softmax per epoch (the paper's Fig. 3), the expected latency under them (with a
latency table), gate entropy and the search exit rule."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from trainers.atomic import atomic_write_text

from ..plotting import pyplot, save_figure

GateProbabilities = dict[str, list[float]]  # choice label -> softmax over its candidates


def normalised_entropy(probabilities: list[float]) -> float:
    """Entropy divided by its maximum log(N): 1 = undecided, 0 = one candidate has all the mass."""
    if len(probabilities) < 2:
        return 0.0
    entropy = -sum(p * math.log(p) for p in probabilities if p > 0)
    return entropy / math.log(len(probabilities))


def argmax_choices(probabilities: GateProbabilities) -> dict[str, int]:
    return {label: max(range(len(p)), key=p.__getitem__) for label, p in probabilities.items()}


@dataclass
class GateTrajectory:
    """Gate probabilities per epoch, with the derived per-epoch facts the dashboard plots."""

    candidates: dict[str, list]  # label -> candidate values, in the order of the probabilities
    epochs: list[GateProbabilities] = field(default_factory=list)
    expected_latency_ms: list[float] = field(default_factory=list)  # per epoch, when the search has a latency table

    def record(self, probabilities: GateProbabilities, expected_latency_ms: float | None = None) -> dict[str, float]:
        """Store one epoch; return its mean normalised entropy and how many argmax choices changed."""
        previous = argmax_choices(self.epochs[-1]) if self.epochs else None
        self.epochs.append({label: [float(p) for p in probs] for label, probs in probabilities.items()})
        if expected_latency_ms is not None:
            self.expected_latency_ms.append(float(expected_latency_ms))
        current = argmax_choices(probabilities)
        changed = sum(current[label] != previous[label] for label in current) if previous else len(current)
        entropies = [normalised_entropy(p) for p in probabilities.values()]
        return {"gate_entropy": sum(entropies) / max(1, len(entropies)), "argmax_changes": changed}

    def to_dict(self) -> dict:
        data = {"candidates": self.candidates, "epochs": self.epochs}
        if self.expected_latency_ms:
            data["expected_latency_ms"] = self.expected_latency_ms
        return data

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "GateTrajectory":
        data = json.loads(Path(path).read_text())
        return cls(candidates=data["candidates"], epochs=data["epochs"],
                   expected_latency_ms=data.get("expected_latency_ms", []))

    def plot(self, path: Path) -> None:
        """One panel per choice, a line per candidate, softmax against epoch (like the paper's Fig. 3); with a
        latency table a last panel of the expected latency."""
        plt = pyplot()
        labels = list(self.candidates)
        columns = 2
        panels = len(labels) + (1 if self.expected_latency_ms else 0)
        rows = max(1, math.ceil(panels / columns))
        figure, axes = plt.subplots(rows, columns, figsize=(10, 2.2 * rows), squeeze=False, sharex=True)
        epochs = range(1, len(self.epochs) + 1)
        for axis, label in zip(axes.flat, labels):
            for index, candidate in enumerate(self.candidates[label]):
                axis.plot(epochs, [epoch[label][index] for epoch in self.epochs], label=str(candidate))
            axis.set_title(label, fontsize=9)
            axis.set_ylim(0, 1)
            axis.legend(fontsize=7, loc="upper left")
        if self.expected_latency_ms:
            axis = axes.flat[len(labels)]
            axis.plot(range(1, len(self.expected_latency_ms) + 1), self.expected_latency_ms, color="black")
            axis.set_title("expected latency (ms)", fontsize=9)
        for axis in axes.flat[panels:]:
            axis.set_visible(False)
        for axis in axes[-1]:
            axis.set_xlabel("search epoch")
        figure.supylabel("softmax of architecture parameters")
        save_figure(plt, figure, path, dpi=80)


@dataclass
class SearchExit:
    """Stop once the argmax architecture held for `patience` epochs and the mean gate entropy is low.

    The paper (Fig. 3) saw gates settle, then turn erratic again past ~400 epochs, and named a stopping rule
    as open work; this is ours. patience = 0 turns it off.
    """

    patience: int = 0
    entropy_threshold: float = 0.5
    stable_epochs: int = 0

    def should_stop(self, argmax_changes: int, gate_entropy: float) -> bool:
        if self.patience <= 0:
            return False
        self.stable_epochs = self.stable_epochs + 1 if argmax_changes == 0 else 0
        return self.stable_epochs >= self.patience and gate_entropy <= self.entropy_threshold
