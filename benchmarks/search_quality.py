"""Does the search pay? Each method against its baselines at the same training budget, over several seeds.

Pairs (benchmarks/quality/): stagewise (vs Random and TPE over stage depths under the found net's parameter
count, and the uniform-depth net of about its parameters), nash (hill climbing vs its random walk and the start
net), proxyless (a scope vs Random over its choices, random paths scored on the trained supernet, the plain
network, and Kendall's tau of the supernet's ranking), resbuilder (layer pruning vs random insertions and
removals within zeta, MorphNet only, and the start net).

The budget is training FLOPs (trainers.budget: images seen x 3 x the trained network's forward FLOPs, summed over
every network a run trained, the supernet included), reported with wall time. A method runs first and its
spend B sizes its baselines: a random or TPE search trains sampled networks while the next one still fits in B
(the best by validation accuracy is returned), a fixed network trains the epochs that spend B. Every returned
network is tested on the same held-out test split; nothing is chosen on it.

Writes to --out: results.json (every run; a rerun skips the runs it holds, so an interrupted benchmark goes on
where it stopped), table.md (mean +- std over seeds, params, FLOPs, training FLOPs, wall time, RI against the
pair's random baseline) and pareto.png (test accuracy vs FLOPs, one point per run, the front drawn); the table
is printed at the end. Work folders (searches, trials, exports) go to --out/work.

Usage: python benchmarks/search_quality.py --preset cpu [--seeds 3] [--pairs stagewise,nash] [--out DIR]
    --preset smoke: one seed in ~3 minutes on 2 cores; cpu: digits, ~35 minutes for 3 seeds; cifar10: one GPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: search_spaces, strategies, trainers

import torch  # noqa: E402

from quality.pairs_multi_trial import nash_pair, resbuilder_pair, stagewise_pair  # noqa: E402
from quality.pairs_proxyless import proxyless_pair  # noqa: E402
from quality.presets import PAIRS, PRESETS  # noqa: E402
from quality.report import markdown, plot  # noqa: E402
from quality.runs import Context, Results, logger  # noqa: E402


def parse_seeds(text: str) -> list[int]:
    """"3" = seeds 0, 1, 2; "0,4,7" = those seeds."""
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give a count (3) or a list (0,4,7).") from None


def parse_pairs(text: str) -> list[str]:
    pairs = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [pair for pair in pairs if pair not in PAIRS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown pair {unknown[0]!r}; use some of {', '.join(PAIRS)}.")
    return [pair for pair in PAIRS if pair in pairs]  # the priority order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--dataset", help="digits, cifar10, imagefolder, ... (default: the preset's)")
    parser.add_argument("--data-dir", help="where the dataset's files are (default: the preset's, else data)")
    parser.add_argument("--image-size", type=int, help="input side for every pair (proxyless keeps at least its "
                        "scope's smallest size)")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("3"), help="a count or a list (default 3)")
    parser.add_argument("--budget", type=float, help="training FLOPs for every baseline instead of the method's spend")
    parser.add_argument("--pairs", type=parse_pairs, default=list(PAIRS), help=f"some of {','.join(PAIRS)}")
    parser.add_argument("--out", type=Path, default=Path("runs/search_quality"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine two fight over the cores)")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("resnas.trial", "strategies", "nni"):  # per-epoch lines of every trial; the benchmark logs runs
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset].with_overrides(dataset=args.dataset, data_dir=args.data_dir, image_size=args.image_size)
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out, {"preset": preset.name, "dataset": preset.pair_settings("stagewise", 0)["dataset"],
                                 "seeds": args.seeds, "overrides": preset.overrides})
    ctx = Context(preset, results, args.out / "work", int(args.budget) if args.budget else None)
    started = time.perf_counter()
    for seed in args.seeds:  # seed-major: an interrupted benchmark has every pair for its first seeds
        for pair in args.pairs:
            if pair == "stagewise":
                stagewise_pair(ctx, seed)
            elif pair == "nash":
                nash_pair(ctx, seed)
            elif pair == "proxyless":
                proxyless_pair(ctx, seed, kendall=seed == args.seeds[0])
            else:
                resbuilder_pair(ctx, seed)
            write_reports(results, args.out)
    logger.info("done in %.0f s; results in %s", time.perf_counter() - started, args.out)
    print(markdown(results.data))


def write_reports(results: Results, out: Path) -> None:
    (out / "table.md").write_text(markdown(results.data))
    plot(results.data, out / "pareto.png")


if __name__ == "__main__":
    main()
