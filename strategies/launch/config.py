"""Load and check an nnictl experiment YAML before anything is launched.

NNI's own `ExperimentConfig` checks the NNI part; a resnas tuner's `classArgs` go through its method's parser
(strategies.methods), so a typo in a method setting fails here, in one sentence, instead of in the
dispatcher after launch. A local experiment whose trials ask for more GPUs than NNI can see here is refused too
(check_gpus): NNI's manager would die at start (no GPU) or never start a trial. So is a trial command that names
no module or file that exists, a count NNI would refuse with a bare assert (an empty message), and, for the local
training service, a dataset whose files are not where the trials will read them (check_data): each of those
would otherwise pass here and fail every trial, or fail with no reason given.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sqlite3
import subprocess
import sys
import traceback
from contextlib import closing
from pathlib import Path
from typing import Any

import yaml

from .builtin_tuner import builtin_tuner_problem
from .data_files import data_files_problem
from .trial_command import trial_command_problem


class ConfigError(ValueError):
    """A config that cannot be launched; the message is one sentence naming the fix."""


class GpuRequestError(ConfigError):
    """The config is sound, but its trials ask for more GPUs than NNI sees on this machine."""


class DataFilesError(ConfigError):
    """The config is sound, but files this machine must have are not here: the dataset its local trials read, the
    artifact_dir the tuner writes, the SSH key the manager logs in to remote workers with."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _valid_keys() -> list[str]:
    from nni.experiment.config import ExperimentConfig

    return sorted(_camel(field.name) for field in dataclasses.fields(ExperimentConfig))


def _unknown_key_sentence(path: Path, key: str) -> str:
    match = difflib.get_close_matches(key, _valid_keys(), n=1)
    hint = f"; did you mean {match[0]!r}?" if match else "; see nnictl's ExperimentConfig reference for valid keys."
    return f"{path}: unknown key {key!r}{hint}"


def visible_gpus(timeout: float = 60.0) -> tuple[int, str]:
    """How many GPUs NNI's manager will see here, counted by NNI's own collector (pynvml), and why none if none."""
    command = [sys.executable, "-m", "nni.tools.nni_manager_scripts.collect_gpu_info"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return 0, f"NNI's GPU collector did not answer within {timeout:.0f} s"
    except (IndexError, ValueError):
        return 0, "NNI's GPU collector printed no result"
    if not info.get("success"):
        return 0, "pynvml: " + "; ".join(info.get("failures") or ["no GPU found"])
    return int(info.get("gpuNumber") or 0), ""


FIX_CONFIG = "set trialGpuNumber: 0 to train on the CPU, or run where enough GPUs are"
FIX_RESUMED = "resume it where enough GPUs are (a resumed experiment keeps the config it was created with)"


def _gpu_sentence(path: Path | str, config: dict[str, Any], fix: str = FIX_CONFIG) -> str | None:
    """None when the local training service can give each trial its GPUs here, else the one-sentence refusal."""
    if not _is_local(config):
        return None
    service = config.get("trainingService") or {}
    wanted = service.get("trialGpuNumber", config.get("trialGpuNumber")) or 0
    if wanted <= 0:
        return None
    # As NNI's local service asks its scheduler: trialGpuNumber / maxTrialNumberPerGpu, a fraction takes one GPU.
    share = wanted / (service.get("maxTrialNumberPerGpu") or 1)
    devices = 1 if share < 1 else math.floor(share + 0.5)
    count, reason = visible_gpus()
    indices = service.get("gpuIndices")
    usable = count if indices is None else len({index for index in indices if 0 <= index < count})
    if devices <= usable:
        return None
    if count == 0:
        shown = f"this machine shows no GPU to NNI ({reason or 'nvidia-smi/pynvml found none'})"
    elif indices is not None:
        shown = f"gpuIndices {indices} leave {usable} of the {count} GPU(s) NNI sees here"
    else:
        shown = f"this machine shows only {count} GPU(s) to NNI"
    return f"{path}: trialGpuNumber: {wanted} but {shown}; {fix}."


def stored_experiment_config(experiment_dir: Path) -> dict[str, Any] | None:
    """The config NNI keeps for an experiment (the newest ExperimentProfile in its db/nni.sqlite), or None."""
    database = experiment_dir / "db" / "nni.sqlite"
    if not database.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            row = connection.execute("SELECT params FROM ExperimentProfile ORDER BY revision DESC LIMIT 1").fetchone()
        return json.loads(row[0]) if row else None
    except (sqlite3.Error, ValueError, TypeError):
        return None


def check_resume_gpus(experiment_id: str, experiment_dir: Path) -> None:
    """Refuse to resume, before the manager starts, an experiment whose trials ask for GPUs this machine lacks
    (the manager would die collecting GPU info). Unknown experiments are left to nnictl to report."""
    config = stored_experiment_config(experiment_dir)
    sentence = _gpu_sentence(f"experiment {experiment_id}", config, FIX_RESUMED) if config else None
    if sentence is not None:
        raise GpuRequestError(sentence)


def _error_sentence(path: Path, error: Exception) -> str:
    """"PATH: message" for an exception from NNI or a settings parser; never "PATH:" and nothing after it."""
    message = " ".join(str(error).split())
    if message:
        return f"{path}: {message}"
    # NNI checks several values with bare asserts (experiment_config.py: `assert self.trial_concurrency > 0`):
    # the failing line names the key
    frames = traceback.extract_tb(error.__traceback__)
    line = (frames[-1].line or "") if frames else ""
    key = re.search(r"self\.(\w+)", line)
    what = _camel(key.group(1)) if key else "the config"
    shown = f" in `{line}`" if line else ""
    return f"{path}: NNI refused {what} ({type(error).__name__}{shown}); fix that value."


# The counts NNI 3.0 checks with bare asserts or not at all: the least each may be, and what to set it to.
_COUNTS: dict[str, tuple[int, str]] = {
    "trialConcurrency": (1, "set it to how many trials may run at the same time"),
    "maxTrialNumber": (1, "set it to the most trials the experiment may run"),
    "trialGpuNumber": (0, "set it to the GPUs each trial needs, 0 to train on the CPU"),
    "maxTrialNumberPerGpu": (1, "set it to how many trials may share one GPU"),
}


def _check_counts(path: Path, raw: dict[str, Any]) -> None:
    services = raw.get("trainingService")
    sections = [("", raw)] + [("trainingService.", service) for service in
                              (services if isinstance(services, list) else [services]) if isinstance(service, dict)]
    for prefix, section in sections:
        for key, (least, fix) in _COUNTS.items():
            value = section.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value < least:  # other types: NNI's
                raise ConfigError(f"{path}: {prefix}{key} must be at least {least}, got {value}; {fix}.")


def _is_local(config: dict[str, Any]) -> bool:
    service = config.get("trainingService") or {"platform": "local"}
    return isinstance(service, dict) and service.get("platform", "local") == "local"


def _stand_in_key_files(path: Path, config: Any, check: bool) -> dict[tuple[int, int], str]:
    """NNI refuses a remote machine whose sshKeyFile is not a file here. The manager reads the key at launch, so,
    like the data, that is this machine's business: with `check` a missing key is refused in one sentence; without,
    the config file itself stands in for NNI's check ({(service, machine): the key's path}, put back afterwards),
    so a config meant for another machine validates anywhere."""
    services = config.training_service if isinstance(config.training_service, list) else [config.training_service]
    stand_ins = {}
    for service_index, service in enumerate(services):
        for machine_index, machine in enumerate(getattr(service, "machine_list", None) or []):
            if machine.password is not None or machine.ssh_key_file is None:
                continue
            key = Path(str(machine.ssh_key_file)).expanduser()
            key = key if key.is_absolute() else path.parent / key  # NNI's rule: relative to the config file
            if key.is_file():
                continue
            if check:
                raise DataFilesError(f"{path}: sshKeyFile {key} of remote machine {machine.host}:{machine.port} is not a "
                                     f"file on this machine, which logs in with it; create the key (ssh-keygen) and "
                                     f"authorize it on the worker, or point sshKeyFile at the key.")
            stand_ins[(service_index, machine_index)] = str(key)
            machine.ssh_key_file = str(path.resolve())
    return stand_ins


def _with_key_files(canonical: dict[str, Any], stand_ins: dict[tuple[int, int], str]) -> dict[str, Any]:
    service = canonical.get("trainingService")
    services = service if isinstance(service, list) else [service]
    for (service_index, machine_index), key in stand_ins.items():
        services[service_index]["machineList"][machine_index]["sshKeyFile"] = key
    return canonical


def load_experiment_config(
    path: str | Path, check_gpus: bool = False, check_data: bool | None = None
) -> dict[str, Any]:
    """Read and validate an nnictl YAML; returns the canonical config dict NNI would launch.

    check_gpus: also refuse a local experiment whose trials ask for more GPUs than NNI sees on this machine
    (`resnas create` and `resnas validate` do); off, a config meant for another machine can be checked anywhere.
    check_data: also refuse a local resnas experiment whose dataset files are missing (DataFilesError), and any
    whose artifact_dir or remote machines' sshKeyFile is not here (the manager uses both); None follows
    check_gpus, as both ask whether this machine can run the config (`resnas create` passes check_gpus).
    """
    from nni.experiment.config import ExperimentConfig

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass one of the files in nni_configs/.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the syntax.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of nnictl settings.")
    valid = set(_valid_keys())
    for key in raw:
        if key not in valid:
            raise ConfigError(_unknown_key_sentence(path, key))
    _check_counts(path, raw)
    check_here = check_gpus if check_data is None else check_data  # files this machine must have
    try:
        config = ExperimentConfig.load(str(path))
        stand_ins = _stand_in_key_files(path, config, check_here)
        config.validate()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - NNI raises several types; the user needs one sentence
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if unknown:
            raise ConfigError(_unknown_key_sentence(path, unknown.group(1))) from None
        raise ConfigError(_error_sentence(path, error)) from None
    canonical = _with_key_files(config.json(), stand_ins)
    tuner = canonical.get("tuner") or {}
    from ..methods import method_of_tuner

    method = method_of_tuner(tuner.get("className", ""))
    settings = None
    if method is not None:
        try:
            settings = method.parse_class_args(tuner.get("classArgs") or {}, "tuner.classArgs")
        except ValueError as error:
            raise ConfigError(_error_sentence(path, error)) from None
    local = _is_local(canonical)
    problem = trial_command_problem(path, canonical, tuner.get("className") if method else None, local)
    if problem:
        raise ConfigError(problem)
    if tuner.get("name"):  # NNI's built-in tuner on a resnas space: the settings file stands in for classArgs
        problem, settings = builtin_tuner_problem(path, canonical)
        if problem:
            raise ConfigError(problem)
    if check_gpus:
        sentence = _gpu_sentence(path, canonical)
        if sentence is not None:
            raise GpuRequestError(sentence)
    artifact_dir = getattr(settings, "artifact_dir", None)
    if check_here and artifact_dir is not None and not Path(artifact_dir).is_dir():
        raise DataFilesError(f"{path}: artifact_dir {artifact_dir} is not a folder on this machine, where the tuner "
                             f"keeps the search; mount the shared filesystem here, at the same path as on every "
                             f"worker.")
    if check_here and local and settings is not None:
        problem = data_files_problem(path, settings, Path(canonical.get("trialCodeDirectory") or path.parent))
        if problem:
            raise DataFilesError(problem)
    return canonical
