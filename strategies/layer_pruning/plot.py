"""ResBuilder's Fig. 5, drawn from the tuner's state file (so `resnas plot ID` redraws it later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plotting import Figure, pyplot, save_figure


def layer_pruning_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Per pipeline step: the edit and each variant's result (None where it has not finished)."""
    rows: dict[int, dict[str, Any]] = {}
    for key in state.get("order", []):
        job = state["jobs"][key]
        params = job["params"]
        if "step" not in params:
            continue
        row = rows.setdefault(params["step"], {"step": params["step"]})
        if params["kind"] == "with_reg":
            row["edit"] = params.get("edit")
        row[params["kind"]] = job["result"] if job["status"] == "done" else None
    return [rows[step] for step in sorted(rows)]


def plot_layer_pruning(state: dict[str, Any], path: Path) -> Path:
    """The paper's Fig. 5: the three variants' accuracy per pipeline step, depth, the widest first-stage layer."""
    plt = pyplot()
    rows = layer_pruning_rows(state)
    figure, (accuracy_axis, shape_axis) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    names = {"with_reg": "With Reg", "no_reg_ri": "No Reg RI", "no_reg_wi": "No Reg WI"}
    for variant, label in names.items():
        points = [(row["step"], row[variant]["val_accuracy"]) for row in rows if row.get(variant)]
        if points:
            accuracy_axis.plot(*zip(*points), "o-", label=label, markersize=3)
    shaped = [(row["step"], row["with_reg"]) for row in rows if row.get("with_reg")]
    if shaped:
        steps = [step for step, _ in shaped]
        shape_axis.plot(steps, [result["depth"] for _, result in shaped], "s-", label="depth", color="tab:green")
        width_axis = shape_axis.twinx()
        width_axis.plot(steps, [result["widest_first_stage"] for _, result in shaped], "^-", color="tab:purple",
                        label="widest layer, first stage")
        width_axis.set_ylabel("widest first-stage layer (channels)", color="tab:purple")
    for row in rows:
        if row.get("edit") == "morphnet":
            for axis in (accuracy_axis, shape_axis):
                axis.axvline(row["step"], color="0.6", linestyle="--", linewidth=0.8)
    accuracy_axis.set(ylabel="validation accuracy", title="ResBuilder pipeline (dashed: MorphNet steps)")
    accuracy_axis.legend(loc="lower right")
    shape_axis.set(xlabel="pipeline step", ylabel="depth (convs + dense)")
    shape_axis.legend(loc="upper left")
    return save_figure(plt, figure, path)


FIG5 = Figure("fig5.png", plot_layer_pruning)
