"""The job-folder protocol between a multi-trial tuner and its trials (no torch: the tuner reads it too).

A job's folder holds model.ckpt (weights + ArchSpec), arch.json (the ArchSpec, for the tuner) and
result.json, each written atomically; result.json is written last, so its presence means the job is complete.
A trial whose folder has a result reports it again and trains nothing: re-issued jobs cost seconds.

Two more files tell the tuner what happened to a trial NNI only calls "not successful":
- error.txt: the exception line of a trial that raised (written by strategies.trial); a trial that ended
  without one was killed (a signal, the out-of-memory killer), and the tuner issues its job once more;
- .lock: held (flock) while a trial runs the job, so a job re-issued while an orphaned trial of a killed manager
  still runs it waits for that trial and reports its result instead of training the same job beside it.

Where the folders are: trial parameters name job files (JOB_PATH_KEYS) by absolute paths under the search's
artifact root, which they carry as `artifact_dir` (multi_trial.state.search_folders). A trial on a worker that
mounts the root elsewhere (RESNAS_ARTIFACT_DIR) swaps the root (resolve_job_paths). The paths stay absolute rather
than relative to the root so that a job's folder can be copied from the dashboard's trial parameters, parameters
saved before artifact_dir existed need no rule of their own, and a user's own file (a stage-wise donor) is never
mistaken for one under the root.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from trainers.atomic import atomic_write_text

logger = logging.getLogger(__name__)

MODEL_FILE, SPEC_FILE, RESULT_FILE = "model.ckpt", "arch.json", "result.json"
ERROR_FILE, LOCK_FILE = "error.txt", ".lock"
ARTIFACT_DIR_ENV = "RESNAS_ARTIFACT_DIR"  # on a worker: where it mounts the artifact directory, if elsewhere
JOB_PATH_KEYS = ("out_dir", "parent", "start", "source", "donor", "ensemble")  # trial parameters naming job files


class ArtifactDirError(RuntimeError):
    """A trial's machine cannot see the search's artifact directory; one sentence naming the fix."""


def resolve_job_paths(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters with their job paths as this machine sees the artifact directory.

    Parameters without `artifact_dir` (saved before it existed, or not a multi-trial job) are returned as they are.
    """
    root = parameters.get("artifact_dir")
    if not root:
        return parameters
    seen = os.environ.get(ARTIFACT_DIR_ENV) or root
    if not Path(seen).is_dir():
        raise ArtifactDirError(f"trial on {socket.gethostname()} cannot see the artifact directory {seen}; mount it "
                               f"there at the same path, or set {ARTIFACT_DIR_ENV}.")
    if Path(seen) == Path(root):
        return parameters

    def moved(value: Any) -> Any:
        if isinstance(value, list):
            return [moved(item) for item in value]
        if isinstance(value, str) and Path(value).is_relative_to(root):
            return str(Path(seen) / Path(value).relative_to(root))
        return value  # None, or a file of the user's own outside the root

    return {**parameters, **{key: moved(parameters[key]) for key in JOB_PATH_KEYS if key in parameters},
            "artifact_dir": seen}


def finished_result(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable; running the job again", path)
        return None


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    """Written last: its presence means the checkpoint beside it is complete."""
    atomic_write_text(out_dir / RESULT_FILE, json.dumps(result, indent=1, sort_keys=True))


def write_job_error(out_dir: Path, error: BaseException) -> None:
    """The exception line of a job's failed trial: what the tuner records and the summary shows."""
    message = " ".join(str(error).split()) or "(no message)"
    atomic_write_text(out_dir / ERROR_FILE, f"{type(error).__name__}: {message}")


def job_error(out_dir: Path) -> str | None:
    try:
        return (out_dir / ERROR_FILE).read_text().strip() or None
    except OSError:
        return None


def clear_job_error(out_dir: Path) -> None:
    (out_dir / ERROR_FILE).unlink(missing_ok=True)


@contextmanager
def job_lock(out_dir: Path) -> Iterator[None]:
    """Run one trial of a job at a time; waits while another process (an orphaned trial) holds the job."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("%s is being run by another trial (one left running by a killed manager?); waiting for "
                           "it to end and using its result", out_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def job_state(out_dir: Path) -> str:
    """"finished" (its result is written), "running" (a trial holds the job's lock), "died" (a trial took the lock
    and let go without a result), or "unstarted". For the tuner, which reads it without waiting."""
    if (out_dir / RESULT_FILE).is_file():
        return "finished"
    try:
        handle = open(out_dir / LOCK_FILE, "r")
    except OSError:
        return "unstarted"
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "running"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return "died"
