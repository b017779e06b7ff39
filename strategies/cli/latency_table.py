"""`resnas latency-table TABLE`: measure the latency of every part a search space can hold on this machine, into a
versioned JSON table that searches predict latency from (search_spaces/latency_table.py).

    resnas latency-table runs/cpu1.json --device cpu --threads 1 --batch-size 1 --space scope_f --space cifar_depth
    resnas latency-table runs/cpu1.json --arch runs/exp/arch.json           # fill what one architecture lacks
    resnas latency-table runs/cpu1.json --config nni_configs/quickstart.yml  # what that experiment's search needs
    resnas latency-table runs/cpu1.json --space nash --calibrate 3           # per-part overhead, see latency.py
    resnas latency-table runs/cpu1.json --check 20 --out runs/check.json     # prediction error on random networks

An existing table keeps its settings: entries are added, never re-measured, and a table made on another device or
with other settings is refused. Trials fill missing entries themselves when they run on the table's device.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UserError

HELP = "measure per-block latency on this machine into a JSON table (for latency_table / latency_target_ms)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from search_spaces.latency_table import CHECK_SPACES

    parser.add_argument("table", type=Path, help="the JSON table to create or fill, e.g. runs/latency/cpu1.json")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads while timing (cpu only; default 1)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=("32", "bf16-mixed", "16-mixed"), default="32",
                        help="mixed precisions autocast as training does (cuda only)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs")
    parser.add_argument("--statistic", choices=("min", "median"),
                        help="what predictions sum: each part's fastest run or its median (a new table: min on a CPU, "
                             "which other processes share, median on a GPU); changing it drops the calibration")
    parser.add_argument("--space", action="append", choices=CHECK_SPACES, default=[],
                        help="measure every part this space can hold (repeatable); nash and resbuilder: their start "
                             "nets")
    parser.add_argument("--arch", type=Path, action="append", default=[],
                        help="an ArchSpec JSON (arch.json, arch_spec.json) whose missing parts to measure (repeatable)")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="an experiment config: measure every candidate of its ProxylessNAS space, or its "
                             "multi-trial search's start net, at its dataset's input size (repeatable)")
    parser.add_argument("--image-size", type=int, default=224, help="image side for the scoped ResNet-50 and --arch")
    parser.add_argument("--cifar-image-size", type=int, default=32, help="image side for cifar_depth, nash, resbuilder")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="set the per-part overhead from N random networks of each --space")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="time N random networks of each --space (all spaces if none) end to end against the "
                             "prediction, and print the error distribution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="with --check: write every row and the summary here as JSON")


def run(args: argparse.Namespace) -> int:
    from search_spaces.latency import device_settings, locked_table, measure_parts
    from search_spaces.latency_check import SPACES, SpaceSetup, check_predictions, fill_table
    from search_spaces.latency_table import network_parts
    from search_spaces.spec import ArchSpec

    from ..latency_networks import config_networks

    if args.threads < 1:
        raise UserError(f"--threads {args.threads} must be at least 1.")
    settings = device_settings(args.device, args.batch_size, args.precision, args.channels_last,
                               args.threads if args.device == "cpu" else None)
    setup = SpaceSetup(args.image_size, args.cifar_image_size, args.num_classes)
    if args.calibrate and not args.space:
        raise UserError("--calibrate times networks of a space; name one with --space.")
    with locked_table(args.table, settings) as table:
        if args.statistic and args.statistic != table.statistic:
            if table.calibration:
                print(f"statistic {table.statistic} -> {args.statistic}: the part overheads were calibrated on the "
                      f"other statistic and are reset to 0; calibrate again with --calibrate N")
            table.use_statistic(args.statistic)
        measured = fill_table(table, args.space, setup, args.calibrate, args.seed, progress=print)
        if args.calibrate:
            per_kind = ", ".join(f"{key}: {ms:.4g} ms" for key, ms in table.overheads.items())
            print(f"part overheads over {len(table.calibration['networks'])} networks: {per_kind}")
        for path in args.arch:
            try:
                spec = ArchSpec.from_json(path.read_text())
            except OSError as error:
                raise UserError(f"cannot read {path} ({error.strerror}); give an ArchSpec JSON file.") from None
            size = (spec.in_channels, args.image_size, args.image_size)
            measured += measure_parts(table, network_parts(spec, size), progress=print)
        for path in args.config:
            specs, size = config_networks(path)
            measured += measure_parts(table, [part for spec in specs for part in network_parts(spec, size)],
                                      progress=print)
        entries = len(table.entries)
        statistic = table.statistic
    print(f"{args.table}: {entries} entries ({measured} measured now) for {settings.describe()}; predictions sum "
          f"each part's {'fastest run' if statistic == 'min' else 'median'}")
    if args.check:
        report = check_predictions(args.table, settings, args.space or list(SPACES), args.check, args.seed, setup,
                                   progress=print)
        for name, numbers in (("medians", report["summary_median"]), ("fastest runs", report["summary_min"]),
                              (f"the same network timed twice ({statistic})", report["repeatability"])):
            print(f"{name}: within +-10%: {100 * numbers['within_10_percent']:.1f}% of {numbers['architectures']} "
                  f"architectures; median |error| {100 * numbers['median_abs_error']:.1f}%, "
                  f"p90 {100 * numbers['p90_abs_error']:.1f}%")
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0
