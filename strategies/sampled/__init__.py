"""NNI's built-in tuners (Random, TPE, Evolution, GridSearch) on resnas spaces: the settings file a trial command
names, the searchSpace `resnas space` writes from it, and the trial that trains one sampled network.

Torch-free: `resnas validate`/`space` read the settings; the trial code is imported by `run_trial` only.
"""

from pathlib import Path
from typing import Any

from ..reporting import Reporter
from .settings import SPACES, SampledSettings, load_settings_file, parse_sampled_settings, read_settings_file

METHOD = "sampled"  # what trial parameters carry as "method" (strategies.methods)


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from .trial import run_sampled_trial

    return run_sampled_trial(parameters, output_dir, reporter)


def trial_parameters(sample: dict[str, Any], settings_file: str | Path) -> dict[str, Any]:
    """The parameters of a trial whose tuner sent only `sample` (a built-in tuner) and whose command names
    `settings_file`: what strategies.trial dispatches like any method's."""
    return {"method": METHOD, "settings": load_settings_file(settings_file), "sample": sample}


__all__ = ["METHOD", "SPACES", "SampledSettings", "load_settings_file", "parse_sampled_settings", "read_settings_file",
           "run_trial", "trial_parameters"]
