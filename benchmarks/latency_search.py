"""Does ProxylessNAS's latency loss bring the found network under a latency target? (issue 23)

For each seed: the config's search without a latency target (its network's latency L0 predicted from the table;
measured end to end too, but on a shared machine a single measurement can be off by tens of percent), then the
same search with latency_target_ms = FRACTION * L0 (below the unconstrained choice), with each loss form asked for
(and the default latency_pick: within_target). Prints one JSON line per run and a summary: the found network's predicted and measured
latency against the target, and its validation and test accuracy (the cost of the constraint).

    python benchmarks/latency_search.py --config nni_configs/quickstart.yml --seeds 0 1 2 --fraction 0.85

The table (CPU, 1 thread, batch 1, as `resnas latency-table --config` makes it) is calibrated on a few random
networks of the space first. Run it alone on a shared machine: the timings are of this machine as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_spaces.latency import calibrate, device_settings, locked_table, measure_parts  # noqa: E402
from search_spaces.latency_table import network_parts  # noqa: E402
from strategies.latency_networks import config_networks  # noqa: E402
from strategies.proxyless.settings import parse_tuner_args  # noqa: E402
from strategies.reporting import PrintReporter  # noqa: E402
from strategies.trial import run_trial  # noqa: E402
from trainers.datasets import dataset_entry  # noqa: E402

FACTS = ("latency_ms", "measured_latency_ms", "val_accuracy", "test_accuracy", "architecture", "latency_pick",
         "picked_latency_ms", "picked_within_target")


def build_table(config: Path, table: Path, calibration_networks: int, seed: int) -> dict:
    """Every candidate of the config's space measured, then the part overhead from random networks of it."""
    specs, size = config_networks(config)
    settings = parse_tuner_args(_class_args(config))[0]
    info = dataset_entry(settings.dataset).info
    choices = settings.scope_choices(info.num_classes, info.in_channels)
    rng = random.Random(f"{seed}:calibrate")
    networks = [(choices.to_spec({label: rng.choice(values) for label, values in choices.choice_labels()}), size)
                for _ in range(calibration_networks)]
    with locked_table(table, device_settings("cpu", threads=1)) as latency_table:
        measure_parts(latency_table, [part for spec in specs for part in network_parts(spec, size)])
        calibration = calibrate(latency_table, networks)
    return {"part_overhead_ms": latency_table.part_overhead_ms, "overheads": latency_table.overheads,
            "entries": len(latency_table.entries),
            "calibration_median_relative_error": calibration["median_relative_error"]}


def _class_args(config: Path) -> dict:
    import yaml

    return yaml.safe_load(config.read_text())["tuner"]["classArgs"]


def search(config: Path, out_dir: Path, **overrides) -> dict:
    """One in-process ProxylessNAS trial (search, retrain, test, export) with the config's settings and overrides."""
    settings = dataclasses.replace(parse_tuner_args(_class_args(config))[0], **overrides)
    started = time.perf_counter()
    result = run_trial({"method": "proxyless", "settings": settings.to_dict()}, out_dir, PrintReporter())
    return {**{key: result.get(key) for key in FACTS}, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("nni_configs/quickstart.yml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fraction", type=float, default=0.85, help="target = fraction x the unconstrained latency")
    parser.add_argument("--losses", nargs="+", default=["mul#log", "add#linear"])
    parser.add_argument("--retrain-epochs", type=int, help="default: the config's (latency does not depend on it)")
    parser.add_argument("--search-epochs", type=int, help="default: the config's")
    parser.add_argument("--limit-train-batches", type=int, help="weight (and architecture) steps per search epoch")
    parser.add_argument("--calibrate", type=int, default=4, help="random networks timed for the part overhead")
    parser.add_argument("--out", type=Path, default=Path("runs/latency_search"))
    args = parser.parse_args()

    table = args.out / "table.json"
    summary = {"table": build_table(args.config, table, args.calibrate, 0), "runs": []}
    print(json.dumps(summary["table"]), flush=True)
    common = {"latency_table": str(table)}
    for name in ("retrain_epochs", "search_epochs", "limit_train_batches"):
        if getattr(args, name) is not None:
            common[name] = getattr(args, name)
    for seed in args.seeds:
        free = search(args.config, args.out / f"seed{seed}_free", seed=seed, **common)
        target = round(args.fraction * free["latency_ms"], 4)
        row = {"seed": seed, "free": free, "target_ms": target}
        for loss in args.losses:
            row[loss] = search(args.config, args.out / f"seed{seed}_{loss.replace('#', '_')}", seed=seed,
                               latency_target_ms=target, latency_loss=loss, **common)
        summary["runs"].append(row)
        print(json.dumps(row), flush=True)
    for loss in args.losses:
        measured = [row[loss]["measured_latency_ms"] / row["target_ms"] for row in summary["runs"]]
        predicted = [row[loss]["latency_ms"] / row["target_ms"] for row in summary["runs"]]
        summary[loss] = {"predicted_over_target": predicted, "measured_over_target": measured,
                         "measured_at_or_under_target": sum(r <= 1.0 for r in measured),
                         "measured_within_10_percent_of_target": sum(r <= 1.1 for r in measured),
                         "measured_over_target_mean": statistics.fmean(measured), "runs": len(measured)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({loss: summary[loss] for loss in args.losses}))


if __name__ == "__main__":
    main()
