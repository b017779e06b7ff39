"""table.md and pareto.png from results.json: per pair and method, mean +- std over seeds and RI against the
pair's random baseline; test accuracy against FLOPs, one point per run, the Pareto front drawn."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

# Each pair's runs in table order (the method first); RANDOM names the baseline RI is measured against.
METHODS: dict[str, tuple[str, ...]] = {
    "stagewise": ("stagewise", "random", "tpe", "uniform"),
    "nash": ("hill_climbing", "random_walk", "start_net"),
    "proxyless": ("proxyless", "random", "ws_random", "plain"),
    "resbuilder": ("layer_pruning", "random", "morphnet_only", "start_net"),
}
RANDOM: dict[str, str] = {"stagewise": "random", "nash": "random_walk", "proxyless": "random", "resbuilder": "random"}


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def relative_improvement(accuracy: float, random_accuracy: float) -> float:
    """RI = 100 * (acc_method - acc_random) / acc_random: percent better than random search at the same budget."""
    return 100.0 * (accuracy - random_accuracy) / random_accuracy if random_accuracy else math.nan


def rows(runs: list[dict[str, Any]], pair: str) -> list[dict[str, Any]]:
    """One row per method of `pair` that has runs: means over seeds and RI vs the pair's random baseline."""
    by_method = {method: [run for run in runs if (run["pair"], run["method"]) == (pair, method)]
                 for method in METHODS[pair]}
    random_mean = mean_std([run["test_accuracy"] for run in by_method[RANDOM[pair]]])[0]
    table = []
    for method, found in by_method.items():
        if not found:
            continue
        accuracy, spread = mean_std([run["test_accuracy"] for run in found])
        table.append({
            "method": method, "seeds": len(found), "test_mean": accuracy, "test_std": spread,
            "val_mean": mean_std([run["val_accuracy"] for run in found])[0],
            "ri": math.nan if method == RANDOM[pair] else relative_improvement(accuracy, random_mean),
            "params": mean_std([run["params"] for run in found])[0], "flops": mean_std([run["flops"] for run in found])[0],
            "train_flops": mean_std([run["train_flops"] for run in found])[0],
            "wall_s": mean_std([run["wall_s"] for run in found])[0],
            "architecture": found[0].get("architecture", ""),
        })
    return table


def markdown(data: dict[str, Any]) -> str:
    runs = data["runs"]
    lines = [f"# Does the search pay? {data.get('dataset', '')}, preset {data.get('preset', '')}, "
             f"seeds {data.get('seeds', '')}", "",
             "Test accuracy on the same held-out split (mean +- std over seeds; every choice made on validation "
             "accuracy). RI = 100 (acc - acc_random) / acc_random against the pair's random baseline. Training FLOPs: "
             "images seen x 3 x forward FLOPs, summed over every network a run trained (supernet included).", ""]
    for pair in METHODS:
        table = rows(runs, pair)
        if not table:
            continue
        lines += [f"## {pair}", "",
                  "| method | seeds | test accuracy | RI vs random (%) | val accuracy | params | MFLOPs | training FLOPs "
                  "| wall (s) | architecture (first seed) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in table:
            ri = "-" if math.isnan(row["ri"]) else f"{row['ri']:+.2f}"
            lines.append(f"| {row['method']} | {row['seeds']} | {row['test_mean']:.4f} +- {row['test_std']:.4f} | {ri} | "
                         f"{row['val_mean']:.4f} | {row['params']:,.0f} | {row['flops'] / 1e6:.2f} | "
                         f"{row['train_flops']:.3g} | {row['wall_s']:.0f} | {row['architecture']} |")
        if pair == "proxyless":
            for seed, kendall in sorted(data.get("kendall", {}).items()):
                lines.append(f"\nKendall tau (seed {seed}, {kendall['paths']} paths, supernet validation accuracy vs "
                             f"stand-alone validation accuracy): {kendall['tau']:.3f} (p = {kendall['p_value']:.3g})")
        lines.append("")
    failures = data.get("failures", [])
    if failures:
        lines += ["## Failed runs", ""]
        lines += [f"- {f['pair']} / {f['method']} / seed {f['seed']}: {f['error'].splitlines()[-1]}" for f in failures]
        lines.append("")
    return "\n".join(lines)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (flops, accuracy) points no other point beats on both (fewer or equal FLOPs and higher accuracy)."""
    front: list[tuple[float, float]] = []
    for flops, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((flops, accuracy))
    return front


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    pairs = [pair for pair in METHODS if any(run["pair"] == pair for run in data["runs"])]
    if not pairs:
        return
    figure, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 4.0), squeeze=False)
    for axis, pair in zip(axes[0], pairs):
        runs = [run for run in data["runs"] if run["pair"] == pair]
        for index, method in enumerate(METHODS[pair]):
            points = [(run["flops"] / 1e6, run["test_accuracy"]) for run in runs if run["method"] == method]
            if points:  # markers differ too: runs of two methods can land on the same point
                axis.scatter(*zip(*points), color=plt.cm.tab10(index), marker="osD^v"[index % 5], label=method, s=30,
                             alpha=0.8, zorder=3)
        front = pareto_front([(run["flops"] / 1e6, run["test_accuracy"]) for run in runs])
        right = max(run["flops"] / 1e6 for run in runs)
        # steps-post: from each front point on, its accuracy is reachable at that many FLOPs or more
        axis.plot([f for f, _ in front] + [right], [a for _, a in front] + [front[-1][1]], drawstyle="steps-post",
                  color="black", linestyle="--", linewidth=1, label="Pareto front", zorder=2)
        left = min(run["flops"] / 1e6 for run in runs)
        if right > 20 * left:  # a log axis over a narrow range shows no labelled tick at all
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set(title=pair, xlabel="MFLOPs per image (forward)", ylabel="test accuracy")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
