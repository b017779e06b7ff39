"""Plots drawn from a multi-trial tuner's state file: NASH's lineage, ResBuilder's Fig. 5.

Both take the state dict (strategies.multi_trial) so that `resnas plot ID` can redraw them after the fact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # the dispatcher and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_lineage(state: dict[str, Any], path: Path) -> Path:
    """Validation accuracy and parameters of the best net per hill-climbing step, every child as a dot."""
    plt = _pyplot()
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
    return _save(plt, figure, path)


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
    plt = _pyplot()
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
    return _save(plt, figure, path)


# method -> (file name, plotter); `resnas plot` and the tuners use the same entry.
PLOTTERS = {"hill_climbing": ("lineage.png", plot_lineage), "layer_pruning": ("fig5.png", plot_layer_pruning)}
