"""Run a multi-trial search in this process, one job after another, without the NNI manager (notebooks).

    from strategies.local_search import search_locally
    summary = search_locally("hill_climbing", "runs/nash", dataset="digits", image_size=16, n_steps=2)

The tuner and the trials are the same code the nnictl path runs; only the scheduling differs (sequential,
no dashboard). The state file makes it resumable the same way: call it again with the same folder.

It sits above the registry (strategies.methods), which imports every method package and so the multi-trial
base they build on: inside multi_trial/ it would read the registry from below, an import circle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nni

from .methods import METHODS
from .multi_trial.tuner import MultiTrialTuner
from .reporting import PrintReporter
from .trial import run_trial

logger = logging.getLogger(__name__)


def tuner_class(method: str) -> type[MultiTrialTuner]:
    multi_trial = [name for name, record in METHODS.items()
                   if record.tuner is not None and issubclass(record.tuner, MultiTrialTuner)]
    if method not in multi_trial:
        raise ValueError(f"unknown multi-trial method {method!r}; use one of {', '.join(multi_trial)}.")
    return METHODS[method].tuner


def run_tuner_locally(tuner: MultiTrialTuner) -> dict[str, Any] | None:
    """Issue, run and report every job until the tuner finishes; a failing job is skipped like in NNI."""
    parameter_id = 0
    while not tuner.state["finished"]:
        try:
            parameters = tuner.generate_parameters(parameter_id)
        except nni.NoMoreTrialError:
            raise RuntimeError("the tuner has nothing to issue although no job is running; see its log") from None
        try:
            result = run_trial(parameters, Path(parameters["out_dir"]), PrintReporter())
        except Exception:  # noqa: BLE001 - the tuner decides whether the search can go on without this job
            logger.exception("job %s failed", parameters["job"])
            tuner.trial_end(parameter_id, success=False)
        else:
            tuner.receive_trial_result(parameter_id, parameters, result)
        parameter_id += 1
    return tuner.state["summary"]


def search_locally(method: str, work_dir: str | Path, **settings: Any) -> dict[str, Any] | None:
    """The whole search in `work_dir` (state file, job folders, plot); returns the final job's result."""
    return run_tuner_locally(tuner_class(method)(state_dir=str(work_dir), **settings))
