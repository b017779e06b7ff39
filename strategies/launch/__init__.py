"""Launching and following experiments: config validation (config), nnictl start/resume/stop with the
dashboard on 127.0.0.1 behind a token (nnictl + the localhost_only.js and access_guard.js preloads, access_token),
and NNI's REST API (rest)."""

from .config import ConfigError, load_experiment_config
from .nnictl import (
    create_experiment,
    free_port,
    listening_hosts,
    registered_experiment,
    resume_experiment,
    stop_experiment,
)
from .rest import ExperimentHandle, LaunchError, experiment_summary, wait_for_experiment

__all__ = [
    "ConfigError",
    "ExperimentHandle",
    "LaunchError",
    "create_experiment",
    "experiment_summary",
    "free_port",
    "listening_hosts",
    "load_experiment_config",
    "registered_experiment",
    "resume_experiment",
    "stop_experiment",
    "wait_for_experiment",
]
