"""NASH's lineage figure, drawn from the tuner's state file (so `resnas plot ID` redraws it later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plotting import Figure, pyplot, save_figure


def step_kept_its_parent(entry: dict[str, Any]) -> bool:
    """Whether a step stayed at its parent. State files written before the parent was retrained as a job of
    its own have no "kept": there candidates[0] was the parent itself."""
    if "kept" in entry:
        return bool(entry["kept"])
    return entry["winner"] == entry["candidates"][0]["job"]


def plot_lineage(state: dict[str, Any], path: Path) -> Path:
    """Validation accuracy and parameters of the best net per hill-climbing step; every other neighbour as a
    dot (grey: children, black x: the retrained parent)."""
    plt = pyplot()
    lineage = state.get("lineage") or []
    figure, (accuracy_axis, params_axis) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [entry["step"] for entry in lineage]
    for entry in lineage:
        for candidate in entry["candidates"]:
            if candidate.get("val_accuracy") is not None and candidate["job"] != entry["winner"]:
                style = {"color": "black", "marker": "x"} if candidate.get("retrained_parent") else {"color": "0.7"}
                accuracy_axis.scatter(entry["step"], candidate["val_accuracy"], s=12, **style)
                params_axis.scatter(entry["step"], candidate["params"], s=12, **style)
    accuracy_axis.plot(steps, [entry["val_accuracy"] for entry in lineage], "o-", color="tab:blue", label="best")
    params_axis.plot(steps, [entry["params"] for entry in lineage], "o-", color="tab:orange", label="best")
    for entry in lineage[1:]:
        kept = step_kept_its_parent(entry)
        morphisms = ", ".join(m["op"] for m in entry.get("morphisms") or [])
        text = "kept" if kept else f"{entry['winner']}\n{morphisms}"
        accuracy_axis.annotate(text, (entry["step"], entry["val_accuracy"]), fontsize=6,
                               textcoords="offset points", xytext=(0, -16), ha="center")
    for axis in (accuracy_axis, params_axis):
        axis.set_xticks(steps)
        axis.margins(y=0.12)
    accuracy_axis.set(xlabel="hill-climbing step", ylabel="validation accuracy", title="NASH: best net per step")
    params_axis.set(xlabel="hill-climbing step", ylabel="parameters",
                    title="size of the best net (grey: children, x: retrained parent)")
    accuracy_axis.legend(loc="lower right")
    return save_figure(plt, figure, path)


LINEAGE = Figure("lineage.png", plot_lineage)
