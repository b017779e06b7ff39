"""NASH hill climbing (Elsken et al.): function-preserving network morphisms, children trained briefly with SGDR.

Torch-free: NNI's dispatcher imports this package for `HillClimbingTuner`; the trial module is imported by
`run_trial`, in the trial process only.
"""

from pathlib import Path
from typing import Any

from ..reporting import Reporter
from .settings import HillClimbingSettings, parse_hill_climbing_args
from .tuner import HillClimbingTuner


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from .trial import run_hill_climbing_trial

    return run_hill_climbing_trial(parameters, output_dir, reporter)


__all__ = ["HillClimbingSettings", "HillClimbingTuner", "parse_hill_climbing_args", "run_trial"]
