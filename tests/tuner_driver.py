"""Driving a multi-trial tuner by hand in unit tests: take every job it can issue now."""

import nni


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
