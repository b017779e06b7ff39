"""The job-folder protocol between a multi-trial tuner and its trials (no torch: the tuner reads it too).

A job's folder holds model.ckpt (weights + ArchSpec), arch.json (the ArchSpec, for the tuner) and
result.json, each written atomically; result.json is written last, so its presence means the job is complete.
A trial whose folder has a result reports it again and trains nothing: re-issued jobs cost seconds.

Two more files tell the tuner what happened to a trial NNI only calls "not successful":
- error.txt: the exception line of a trial that raised (written by strategies.trial); a trial that ended
  without one was killed (a signal, the out-of-memory killer), and the tuner issues its job once more;
- .lock: held (flock) while a trial runs the job, so a job re-issued while an orphaned trial of a killed manager
  still runs it waits for that trial and reports its result instead of training the same job beside it.
"""

from __future__ import annotations

import fcntl
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from trainers.atomic import atomic_write_text

logger = logging.getLogger(__name__)

MODEL_FILE, SPEC_FILE, RESULT_FILE = "model.ckpt", "arch.json", "result.json"
ERROR_FILE, LOCK_FILE = "error.txt", ".lock"


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
