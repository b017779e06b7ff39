"""Why a followed experiment cannot go on: a manager in ERROR, or a tuner process that died.

NNI's manager notices neither a tuner that was killed (it stays RUNNING and queues commands for it forever) nor
explains an ERROR beyond "check tuner (dispatcher) log". `resnas create --wait` asks here on every poll and ends
with one line naming the error and the log that holds it (exit 1) instead of waiting.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from .processes import manager_pids, tuner_pids

TUNER_GRACE_SECONDS = 10.0  # NNI's own deadline for a starting tuner to connect

# "RuntimeError: ..." or "strategies.multi_trial.state.StateError: ..." (a traceback's last line)
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b:?.*$")
# NNI's log lines: "[2026-12-01 12:35:44] ERROR (TaskScheduler) Failed to collect GPU info ..."
_LOG_ERROR = re.compile(r"^\[[^\]]*\]\s+ERROR\s+(?:\((?P<source>[^)]*)\)\s*)?(?P<message>.*)$")


def _lines(log_file: Path) -> list[str]:
    try:
        return log_file.read_text(errors="replace").splitlines()
    except OSError:
        return []


def manager_error_line(log_file: Path) -> str | None:
    """The last ERROR line of an NNI log, as "Source: message" (what it died of), or None."""
    for line in reversed(_lines(log_file)):
        match = _LOG_ERROR.match(line.strip())
        if match and match["message"].strip():
            source = f"{match['source']}: " if match["source"] else ""
            return f"{source}{match['message'].strip()}"
    return None


def tuner_error_line(log_file: Path) -> str | None:
    """What the tuner died of: the exception line ending its log's last traceback, else its last ERROR line."""
    lines = _lines(log_file)
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line.strip()):
            return line.strip()
    return manager_error_line(log_file)


class TunerWatch:
    """Tells, poll after poll, whether an experiment's tuner process has been missing for too long."""

    def __init__(self, experiment_id: str, folder: Path, grace_seconds: float = TUNER_GRACE_SECONDS):
        self.experiment_id, self.folder, self.grace_seconds = experiment_id, folder, grace_seconds
        self.missing_since: float | None = None

    def tuner_died(self) -> bool:
        # Judged only where this process sees the experiment's manager (same machine, /proc readable).
        if tuner_pids(self.folder) or not manager_pids(self.experiment_id):
            self.missing_since = None
            return False
        now = time.monotonic()
        self.missing_since = self.missing_since or now
        return now - self.missing_since >= self.grace_seconds


def failure_sentence(experiment_id: str, folder: Path, status: str, errors: list[str], tuner_died: bool) -> str | None:
    """One sentence for an experiment that cannot go on, naming the error and the log holding it; None if it can."""
    tuner_log, manager_log = folder / "log" / "dispatcher.log", folder / "log" / "nnimanager.log"
    fix = f"fix the cause and run `resnas resume {experiment_id}`"
    if tuner_died:
        line = tuner_error_line(tuner_log) or "no error in its log: killed by a signal or the out-of-memory killer?"
        return f"the tuner of experiment {experiment_id} died ({line}); see {tuner_log}, {fix}."
    if status != "ERROR":
        return None
    line = tuner_error_line(tuner_log)
    if line is not None:
        return f"experiment {experiment_id} ended in ERROR: the tuner failed with {line!r}; see {tuner_log}, {fix}."
    line = (errors or [None])[-1] or manager_error_line(manager_log) or "no error line in its log"
    return f"experiment {experiment_id} ended in ERROR ({line}); see {manager_log}, {fix}."
