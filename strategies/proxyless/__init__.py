"""ProxylessNAS over a search scope (s/m/l/f) of ResNet-50: binary gates over NNI LayerChoices, one trial per
scope (the tuner), search + argmax + retrain + test + export (the trial).

Torch-free: NNI's dispatcher imports this package for `ProxylessTuner`; the trial, the search loop and the
gates are imported by `run_trial`, in the trial process only.
"""

from pathlib import Path
from typing import Any

from ..reporting import Reporter
from .settings import ProxylessSearchConfig, ProxylessSettings, parse_tuner_args
from .tuner import ProxylessTuner


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from .trial import run_proxyless_trial

    return run_proxyless_trial(parameters, output_dir, reporter)


__all__ = ["ProxylessSearchConfig", "ProxylessSettings", "ProxylessTuner", "parse_tuner_args", "run_trial"]
