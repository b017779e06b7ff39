"""The stage-wise search's figure, drawn from the tuner's state file (so `resnas plot ID` redraws it later):
depth per stage, validation accuracy and the stage scores, per iteration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plotting import Figure, pyplot, save_figure


def stagewise_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Per iteration (0: the start net): the current net's depths, accuracy and scores, and the temporary
    net's scores that decided the growth (None where a job has not finished)."""
    jobs = state.get("jobs", {})

    def result(key: str | None) -> dict[str, Any] | None:
        job = jobs.get(key) if key else None
        return job["result"] if job and job["status"] == "done" else None

    rows = []
    start = result("start")
    if start:
        rows.append({"iteration": 0, "net": start, "temporary_scores": None, "grown": None})
    for record in state.get("iterations", []):
        rows.append({"iteration": record["iteration"], "net": result(record.get("grown_job")),
                     "temporary_scores": record["temporary_scores"], "grown": record["grown"],
                     "current_scores": record["current_scores"]})
    return rows


def plot_stagewise(state: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    rows = stagewise_rows(state)
    figure, (depth_axis, accuracy_axis, score_axis) = plt.subplots(1, 3, figsize=(14, 4))
    nets = [(row["iteration"], row["net"]) for row in rows if row["net"]]
    if nets:
        iterations = [iteration for iteration, _ in nets]
        for stage in range(len(nets[0][1]["depths"])):
            depth_axis.plot(iterations, [net["depths"][stage] for _, net in nets], "o-", label=f"stage {stage + 1}")
        accuracy_axis.plot(iterations, [net["val_accuracy"] for _, net in nets], "o-", color="tab:blue")
        for iteration, net in nets:
            accuracy_axis.annotate("-".join(map(str, net["depths"])), (iteration, net["val_accuracy"]),
                                   fontsize=7, textcoords="offset points", xytext=(0, 5), ha="center")
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for stage in range(len(nets[0][1]["stage_scores"])):
            color = colors[stage % len(colors)]
            score_axis.plot(iterations, [net["stage_scores"][stage] for _, net in nets], "o-", color=color,
                            label=f"stage {stage + 1}, current net")
            temporary = [(row["iteration"], row["temporary_scores"][stage]) for row in rows if row["temporary_scores"]]
            if temporary:
                score_axis.plot(*zip(*temporary), "x--", color=color, label=f"stage {stage + 1}, temporary net")
    depth_axis.set(xlabel="iteration", ylabel="blocks", title="depth per stage")
    accuracy_axis.set(xlabel="iteration", ylabel="validation accuracy", title="current net per iteration")
    score_axis.set(xlabel="iteration", ylabel=f"stage score ({state.get('settings', {}).get('criterion', 'pls')})")
    score_axis.set_title("stage scores (iteration k grows a stage where its x > o at k - 1)", fontsize=9)
    for axis in (depth_axis, accuracy_axis, score_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    depth_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in (depth_axis, score_axis):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    return save_figure(plt, figure, path)


STAGEWISE_FIGURE = Figure("stagewise.png", plot_stagewise)
