"""`resnas plot ID`: redraw a multi-trial search's figure from its state file.

    resnas plot abcd1234                        # NASH: lineage.png; ResBuilder: fig5.png
    resnas plot abcd1234 --dir /data/nni-experiments --out lineage.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw a hill-climbing lineage or a layer-pruning Fig. 5 from an experiment's state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="the experiment ID (as `nnictl create` printed it)")
    parser.add_argument("--dir", type=Path, default=Path("~/nni-experiments"),
                        help="NNI's experimentWorkingDirectory (default ~/nni-experiments)")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: beside the state file)")


def run(args: argparse.Namespace) -> int:
    from .cli import UserError
    from .multi_trial import STATE_FILE, load_state
    from .search_plots import PLOTTERS

    state_path = args.dir.expanduser() / args.experiment / "checkpoint" / STATE_FILE
    state = load_state(state_path)
    if state is None:
        raise UserError(f"no resnas search state at {state_path}; check the experiment ID and --dir.")
    method = state.get("method")
    if method not in PLOTTERS:
        raise UserError(f"experiment {args.experiment} ran {method!r}; plots exist for {', '.join(PLOTTERS)}.")
    file_name, plotter = PLOTTERS[method]
    out = args.out or state_path.parent / method / file_name
    print(plotter(state, out))
    return 0
