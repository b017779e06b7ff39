"""Why a trial failed, in one line: the last meaningful line of its stderr in the experiment's folder.

NNI 3.0 writes each trial's streams beside its outputs: the local service under
ID/environments/local-env/trials/TRIAL/trial.stderr (where the trial runs); the remote service copies a
trial's logs to ID/trials/TRIAL/trial.stderr once asked for them; NNI's legacy local service used
ID/trials/TRIAL/stderr. A Python trial that dies prints a traceback there, whose exception line says why.
"""

from __future__ import annotations

import re
from pathlib import Path

TAIL_BYTES = 64 * 1024  # a traceback's end is all that is read; a trial's stderr can hold hours of warnings
LONGEST = 500  # characters of one line kept in a summary

# "path/to/file.py:21: DeprecationWarning: message": what warnings.warn prints (its source line follows, indented)
_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")


def trial_stderr(experiment_folder: Path, trial_id: str) -> Path | None:
    """The trial's stderr file in the experiment's folder, or None where NNI keeps none on this machine."""
    candidates = [*sorted(experiment_folder.glob(f"environments/*/trials/{trial_id}/trial.stderr")),
                  experiment_folder / "trials" / trial_id / "trial.stderr",
                  experiment_folder / "trials" / trial_id / "stderr"]
    return next((path for path in candidates if path.is_file()), None)


def last_error_line(text: str) -> str | None:
    """The exception line of the last traceback in `text`, else its last line that is not a warning; None if blank.

    After "Traceback (most recent call last):" come indented frames, then the unindented exception line
    ("trainers.datasets.DataError: CIFAR-10 files not found under ..."); a chained traceback's last one is the
    one that ended the trial.
    """
    lines = text.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        for line in lines[starts[-1] + 1:]:
            if line.strip() and not line[0].isspace():
                return line.strip()[:LONGEST]
    for line in reversed(lines):
        if line.strip() and not line[0].isspace() and not _WARNING.match(line):
            return line.strip()[:LONGEST]
    return None


def trial_error(experiment_folder: Path, trial_id: str) -> str:
    """One line saying why the trial failed: its stderr's error line, or where that stderr is (not) to be seen."""
    path = trial_stderr(experiment_folder, trial_id)
    if path is None:
        return f"no stderr of this trial under {experiment_folder} (a remote trial's stays on its worker)"
    try:
        with path.open("rb") as stream:
            stream.seek(max(0, path.stat().st_size - TAIL_BYTES))
            text = stream.read().decode(errors="replace")
    except OSError as error:
        return f"its stderr {path} could not be read ({error.strerror or type(error).__name__})"
    return last_error_line(text) or f"nothing on its stderr ({path}); it was killed or exited without a message"
