"""Driving a multi-trial tuner by hand in unit tests: take every job it can issue now."""

from pathlib import Path

import nni

from strategies.multi_trial.job_files import resolve_job_paths, write_job_error


def issue_all_with_ids(tuner, first_id: int = 0) -> dict[str, tuple[int, dict]]:
    """Every job the tuner can issue now, as {key: (parameter id, params)}; ids count up from first_id."""
    issued, parameter_id = {}, first_id
    while True:
        try:
            params = tuner.generate_parameters(parameter_id)
        except nni.NoMoreTrialError:
            return issued
        issued[params["job"]] = (parameter_id, params)
        parameter_id += 1


def issue_all(tuner, first_id: int = 0) -> dict[str, dict]:
    """Every job the tuner can issue now, as {key: params}."""
    return {key: params for key, (_, params) in issue_all_with_ids(tuner, first_id).items()}


def fail(tuner, parameter_id: int, params: dict, error: Exception = RuntimeError("made-up failure")) -> None:
    """A trial that raised: strategies.trial writes the exception line to the job folder (as its machine sees the
    artifact directory), then NNI says FAILED."""
    write_job_error(Path(resolve_job_paths(params)["out_dir"]), error)
    tuner.trial_end(parameter_id, success=False)
