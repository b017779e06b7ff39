"""The one trial entry point every nni_configs/*.yml uses: `python -m strategies.trial`.

It reads its JSON parameters from NNI and hands them to the runner of the method they name
(`strategies.methods.METHODS`), which reports through an NniReporter. Under NNI's built-in tuners the parameters
are only the sampled choices; the command then names the settings file (`--settings FILE`) and the trial runs
the `sampled` method on them (strategies.sampled.trial_parameters).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .methods import METHODS
from .multi_trial.job_files import clear_job_error, job_lock, resolve_job_paths, write_job_error
from .payload_guard import refusing_code_payloads
from .sampled import trial_parameters
from .reporting import NniReporter, Reporter
from .settings import SettingsError


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    # Job files as this machine sees the artifact directory (a remote worker may mount it elsewhere); before the
    # lock, which lives in the job's folder: a worker that cannot see it fails here, in one sentence.
    parameters = resolve_job_paths(parameters)
    job_dir = parameters.get("out_dir")  # a multi-trial job: its folder tells the tuner how the trial ended
    if not job_dir:
        return _run_method(parameters, output_dir, reporter)
    job_dir = Path(job_dir)
    with job_lock(job_dir):
        clear_job_error(job_dir)
        try:
            return _run_method(parameters, output_dir, reporter)
        except Exception as error:
            write_job_error(job_dir, error)
            raise


def _run_method(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    method = parameters.get("method")
    if method not in METHODS:
        raise SettingsError(f"trial parameters name method {method!r}; this resnas runs {', '.join(METHODS)}.")
    output_dir.mkdir(parents=True, exist_ok=True)
    return METHODS[method].run_trial(parameters, output_dir, reporter)


def main(argv: list[str] | None = None) -> int:
    import nni

    parser = argparse.ArgumentParser(prog="python -m strategies.trial")
    parser.add_argument("--settings", help="the settings file of a built-in tuner's trial (NNI sends it only the "
                                           "sampled choices); a resnas tuner's trial needs none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with refusing_code_payloads():  # parameters can come from the REST API (customized trials)
        parameters = nni.get_next_parameter()
    if not parameters:
        print("no trial parameters: run this through `resnas create` or `nnictl create`.", file=sys.stderr)
        return 2
    if args.settings:
        parameters = trial_parameters(parameters, args.settings)
    # NNI_OUTPUT_DIR is the trial's own folder in the experiment directory (shown in the dashboard).
    output_dir = Path(os.environ.get("NNI_OUTPUT_DIR", "runs/trial"))
    run_trial(parameters, output_dir, NniReporter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
