"""`resnas plot ID`: redraw a multi-trial search's figure from its state file.

    resnas plot abcd1234                        # NASH: lineage.png; ResBuilder: fig5.png
    resnas plot abcd1234 --dir /data/nni-experiments --out lineage.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UserError

HELP = "draw a hill-climbing lineage or a layer-pruning Fig. 5 from an experiment's state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="the experiment ID (as `nnictl create` printed it)")
    parser.add_argument("--dir", type=Path, default=Path("~/nni-experiments"),
                        help="NNI's experimentWorkingDirectory (default ~/nni-experiments)")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: beside the state file)")


def run(args: argparse.Namespace) -> int:
    from ..methods import METHODS
    from ..multi_trial.state import load_state, locate_state_file

    state_path = locate_state_file(args.dir.expanduser() / args.experiment / "checkpoint")  # or under artifact_dir
    state = load_state(state_path)
    if state is None:
        raise UserError(f"no resnas search state at {state_path}; check the experiment ID and --dir.")
    method = state.get("method")
    plotted = [name for name, record in METHODS.items() if record.figure is not None]
    if method not in plotted:
        raise UserError(f"experiment {args.experiment} ran {method!r}; plots exist for {', '.join(plotted)}.")
    figure = METHODS[method].figure
    out = args.out or state_path.parent / method / figure.file_name
    print(figure.draw(state, out))
    return 0
