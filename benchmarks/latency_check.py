"""Does a latency table predict whole networks? (issue 23, item 2: >= 90 % of architectures within +-10 %.)

Fills a table for every space on this machine (resnas latency-table's measuring code), calibrates its per-part
overhead on a few networks of each space that are not checked (seeded apart), then times N random architectures of
each space end to end and compares them with the prediction (search_spaces/latency_check.py). Writes the table and
a JSON report. (The same as `resnas latency-table TABLE --space ... --calibrate 3 --check N --out REPORT`.)

    python benchmarks/latency_check.py --threads 1 --batch-size 1 --count 20 --out runs/latency_check_cpu1
    python benchmarks/latency_check.py --device cuda --batch-size 32 --count 20 --out runs/latency_check_gpu

On a shared machine run it alone: other processes' load is timed too (the report keeps every run's spread).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from search_spaces.latency import device_settings, locked_table
from search_spaces.latency_check import SPACES, SpaceSetup, check_predictions, fill_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--image-size", type=int, default=224, help="the scoped ResNet-50's image side")
    parser.add_argument("--space", action="append", choices=SPACES, help="default: every space")
    parser.add_argument("--count", type=int, default=20, help="architectures per space")
    parser.add_argument("--calibrate", type=int, default=3, help="networks per space timed for the overhead (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--statistic", choices=("min", "median"), help="what the table predicts from (a new "
                        "table's default: min on a CPU, median on a GPU; see latency_table.default_statistic)")
    parser.add_argument("--paired", action="store_true",
                        help="time each network's parts again right before it (the model without the machine's drift)")
    parser.add_argument("--out", type=Path, default=Path("runs/latency_check"))
    args = parser.parse_args()

    settings = device_settings(args.device, args.batch_size, args.precision, args.channels_last,
                               args.threads if args.device == "cpu" else None)
    setup = SpaceSetup(image_size=args.image_size)
    spaces = args.space or list(SPACES)
    table_path = args.out / "table.json"
    started = time.perf_counter()
    with locked_table(table_path, settings) as table:
        if args.statistic:  # the overheads are calibrated again below
            table.use_statistic(args.statistic)
        # calibration networks are drawn apart from the checked ones, as the command's are
        fill_table(table, spaces, setup, args.calibrate, args.seed)
    print(f"table: {len(table.entries)} entries, part overheads {table.overheads} ms "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    report = check_predictions(table_path, settings, spaces, args.count, args.seed, setup,
                               progress=lambda line: print(line, flush=True), paired=args.paired)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["table"] = str(table_path)
    report["overheads_ms"] = table.overheads
    (args.out / ("report_paired.json" if args.paired else "report.json")).write_text(json.dumps(report, indent=1) + "\n")
    def within(by_space: dict) -> dict:
        return {space: round(numbers.get("within_10_percent", 0), 3) for space, numbers in by_space.items()}

    print(json.dumps({"device": report["device"], "statistic": report["statistic"],
                      "load_average": report["load_average_1_5_15_min"], "summary": report["summary"],
                      "by_space": within(report["by_space"]), "summary_median": report["summary_median"],
                      "summary_min": report["summary_min"], "repeatability": report["repeatability"],
                      "repeatability_by_space": within(report["repeatability_by_space"])}))


if __name__ == "__main__":
    main()
