"""The machinery the multi-trial methods share: the tuner base with its state file and resume, the job-folder
protocol between tuner and trials, and the in-process search for notebooks.

Torch-free: tuner modules import this package inside NNI's dispatcher. Trial-side helpers (training, the job
model, test + export) are in `job_trial`, which trials import themselves.
"""

from .local import run_tuner_locally, search_locally
from .tuner import MultiTrialTuner

__all__ = ["MultiTrialTuner", "run_tuner_locally", "search_locally"]
