"""ProxylessNAS over a search scope (s/m/l/f) of ResNet-50: binary gates over NNI LayerChoices, one trial per
scope (the tuner), search + argmax + retrain + test + export (the trial). `ProxylessStrategy` runs the same
search from NNI's Python API: `NasExperiment(space, evaluator, ProxylessStrategy()).run()`.

Torch-free: NNI's dispatcher imports this package for `ProxylessTuner`; the trial, the search loop and the
gates are imported by `run_trial`, in the trial process only, and the strategy on first access.
"""

from pathlib import Path
from typing import Any

from ..reporting import Reporter
from .settings import ProxylessSearchConfig, ProxylessSettings, parse_tuner_args
from .tuner import ProxylessTuner


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from .trial import run_proxyless_trial

    return run_proxyless_trial(parameters, output_dir, reporter)


def __getattr__(name: str) -> Any:
    if name == "ProxylessStrategy":  # imports torch, Lightning and NNI's one-shot package: only when asked for
        from .strategy import ProxylessStrategy

        return ProxylessStrategy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ProxylessSearchConfig", "ProxylessSettings", "ProxylessStrategy", "ProxylessTuner", "parse_tuner_args",
           "run_trial"]
