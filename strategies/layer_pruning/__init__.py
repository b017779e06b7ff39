"""ResBuilder layer pruning (Burghoff et al.): random block insertion, LayerLasso removal, MorphNet widths.

Torch-free: NNI's dispatcher imports this package for `LayerPruningTuner`; the trial module is imported by
`run_trial`, in the trial process only.
"""

from pathlib import Path
from typing import Any

from ..reporting import Reporter
from .settings import LayerPruningSettings, parse_layer_pruning_args
from .tuner import LayerPruningTuner


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from .trial import run_layer_pruning_trial

    return run_layer_pruning_trial(parameters, output_dir, reporter)


__all__ = ["LayerPruningSettings", "LayerPruningTuner", "parse_layer_pruning_args", "run_trial"]
