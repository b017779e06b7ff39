"""NASH's lineage figure, drawn from the tuner's state file (so `resnas plot ID` redraws it later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plotting import Figure, pyplot, save_figure


def plot_lineage(state: dict[str, Any], path: Path) -> Path:
    """Validation accuracy and parameters of the best net per hill-climbing step, every child as a dot."""
    plt = pyplot()
    lineage = state.get("lineage") or []
    figure, (accuracy_axis, params_axis) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [entry["step"] for entry in lineage]
    for entry in lineage:
        for candidate in entry["candidates"]:
            if candidate.get("val_accuracy") is not None and candidate["job"] != entry["winner"]:
                accuracy_axis.scatter(entry["step"], candidate["val_accuracy"], color="0.7", s=12)
                params_axis.scatter(entry["step"], candidate["params"], color="0.7", s=12)
    accuracy_axis.plot(steps, [entry["val_accuracy"] for entry in lineage], "o-", color="tab:blue", label="best")
    params_axis.plot(steps, [entry["params"] for entry in lineage], "o-", color="tab:orange", label="best")
    for entry in lineage[1:]:
        moved = entry["winner"] != entry["candidates"][0]["job"]  # candidates[0] is the step's parent
        morphisms = ", ".join(m["op"] for m in entry.get("morphisms") or []) if moved else ""
        text = f"{entry['winner']}\n{morphisms}" if moved else "kept"
        accuracy_axis.annotate(text, (entry["step"], entry["val_accuracy"]), fontsize=6,
                               textcoords="offset points", xytext=(0, -16), ha="center")
    for axis in (accuracy_axis, params_axis):
        axis.set_xticks(steps)
        axis.margins(y=0.12)
    accuracy_axis.set(xlabel="hill-climbing step", ylabel="validation accuracy", title="NASH: best net per step")
    params_axis.set(xlabel="hill-climbing step", ylabel="parameters", title="size of the best net (grey: children)")
    accuracy_axis.legend(loc="lower right")
    return save_figure(plt, figure, path)


LINEAGE = Figure("lineage.png", plot_lineage)
