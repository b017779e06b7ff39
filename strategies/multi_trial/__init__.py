"""The machinery the multi-trial methods share: the tuner base with its state file and resume, the job-folder
protocol between tuner and trials. The in-process search for notebooks is strategies.local_search, above the
method registry.

Torch-free: tuner modules import this package inside NNI's dispatcher. Trial-side helpers (training, the job
model, test + export) are in `job_trial`, which trials import themselves.
"""

from .tuner import MultiTrialTuner

__all__ = ["MultiTrialTuner"]
