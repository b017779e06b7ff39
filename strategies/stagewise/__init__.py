"""Stage-wise depth search (Jordao et al.): grow each stage of a CIFAR ResNet where its PLS importance rises.

Torch-free: NNI's dispatcher imports this package for `StagewiseTuner`; the trial module is imported by
`run_trial`, in the trial process only.
"""

from pathlib import Path
from typing import Any

from ..reporting import Reporter
from .settings import StagewiseSettings, parse_stagewise_args
from .tuner import StagewiseTuner


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from .trial import run_stagewise_trial

    return run_stagewise_trial(parameters, output_dir, reporter)


__all__ = ["StagewiseSettings", "StagewiseTuner", "parse_stagewise_args", "run_trial"]
