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


def nash_job_spec(params: dict) -> "ArchSpec":
    """The network a NASH job trains (the made-up start net, or the parent's arch.json with the job's morphisms),
    written to the job folder as a trial leaves it."""
    from search_spaces import ArchSpec, nash_start_spec
    from search_spaces.edits.morphism_ops import Morphism, apply_to_spec

    if params["kind"] == "start":
        spec = nash_start_spec(10, (4, 8, 8), in_channels=1)
    else:
        spec = ArchSpec.from_json((Path(params["parent"]).parent / "arch.json").read_text())
        for morphism in params.get("morphisms", []):
            spec = apply_to_spec(spec, Morphism.from_dict(morphism))
    out_dir = Path(params["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "arch.json").write_text(spec.to_json())
    return spec


def run_to_end(tuner, trial) -> list[str]:
    """Issue and answer jobs until the tuner finishes: `trial(params)` returns the result each job reports. Returns
    the keys of the jobs issued, in order."""
    issued_keys, parameter_id = [], 0
    while not tuner.state["finished"]:
        issued = issue_all_with_ids(tuner, parameter_id)
        assert issued, "the tuner stalled"
        parameter_id += len(issued)
        for key, (pid, params) in issued.items():
            issued_keys.append(key)
            tuner.receive_trial_result(pid, params, trial(params))
    return issued_keys
