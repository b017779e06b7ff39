"""A running experiment's status as a person reads it: for `resnas create/resume --wait` and `resnas status`.

status_of(trials, state, started) folds NNI's trial list and a multi-trial tuner's state file into a Status
(pure: no I/O). Two renderers show it while `--wait` blocks:

    TerminalStatus  on a terminal: one line redrawn in place (tqdm, which Lightning already depends on)
    ChangeLog       anywhere else (a log file, CI): one plain line per change (a trial starts or ends, the best
                    improves, the step moves), never a line per poll, so a day-long search leaves a short log

LiveStatus is wait_for_experiment's on_poll: it reads the state file, builds the Status and hands it on.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TextIO

from ..multi_trial.state import ENDED, StateError
from ..reporting import decode_metric
from .rest import ExperimentHandle, _final_metric, _score, rest, tuner_state

CANCELLED_STATES = ("USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")


@dataclass(frozen=True)
class TrialView:
    id: str
    status: str  # NNI's: WAITING, RUNNING, SUCCEEDED, FAILED, USER_CANCELED, ...
    job: str | None  # the multi-trial job it runs ("step1/child0"), None for single-trial methods
    metric: float | None  # its final `default`, once it reported one
    latest: float | None = None  # a running trial's last intermediate `default` (its epoch's), if any
    epoch: int | None = None  # the epoch of `latest`

    @property
    def name(self) -> str:
        return f"{self.id} ({self.job})" if self.job else self.id


@dataclass(frozen=True)
class Status:
    elapsed: float  # seconds
    experiment: str  # NNI's experiment status (RUNNING, TUNER_NO_MORE_TRIAL, DONE, ...)
    trials: tuple[TrialView, ...]
    best: TrialView | None  # the succeeded trial with the highest `default`
    step: str | None  # where a multi-trial search is ("step 2/3"), None without a tuner state
    jobs: tuple[int, int] | None = None  # a multi-trial search's (ended, all) jobs, None without a tuner state

    def count(self, *states: str) -> int:
        return sum(trial.status in states for trial in self.trials)

    @property
    def succeeded(self) -> int:
        return self.count("SUCCEEDED")

    @property
    def running(self) -> int:
        return self.count("RUNNING")

    @property
    def waiting(self) -> int:
        return self.count("WAITING", "UNKNOWN")

    @property
    def failed(self) -> int:
        return self.count("FAILED")

    @property
    def cancelled(self) -> int:
        return self.count(*CANCELLED_STATES)


# ---- the pure part --------------------------------------------------------------------------------------------
def _job_of(trial: dict) -> str | None:
    """The job key inside NNI's parameter envelope ({"parameter_id": ..., "parameters": {...}}), JSON-encoded."""
    sent = decode_metric((trial.get("hyperParameters") or [None])[-1])
    parameters = sent.get("parameters") if isinstance(sent, dict) else None
    job = parameters.get("job") if isinstance(parameters, dict) else None
    return job if isinstance(job, str) else None


def _settings(state: dict[str, Any]) -> dict[str, Any]:
    settings = state.get("settings")
    return settings if isinstance(settings, dict) else {}


def _hill_climbing_step(state: dict[str, Any]) -> str | None:
    """state["step"] is the step whose jobs run: 0 the start net, 1..n_steps the climb, then the final training."""
    step, n_steps = state.get("step"), _settings(state).get("n_steps")
    if not isinstance(step, int):
        return None
    if step == 0:
        return "start net"
    return f"step {step}/{n_steps}" if isinstance(n_steps, int) and step <= n_steps else "final training"


def _layer_pruning_step(state: dict[str, Any]) -> str | None:
    """state["step"] is the newest With Reg step; the pipeline has n_morphnet * (insertions + 1) steps after 0."""
    settings, step = _settings(state), state.get("step")
    if not isinstance(step, int):
        return None
    if "final" in state.get("jobs", {}):
        return "final test and export"
    insertions = 0 if settings.get("morphnet_only") else settings.get("n_insertions", 0)
    last = settings.get("n_morphnet", 0) * (insertions + 1)
    return f"step {step}/{last}" if last else f"step {step}"


def _stagewise_step(state: dict[str, Any]) -> str | None:
    """state["decided"] iterations are decided; the next one trains until the search is over, then the final."""
    if state.get("search_over"):
        return "final training"
    decided, iterations = state.get("decided"), _settings(state).get("iterations")
    if not isinstance(decided, int):
        return None
    return f"iteration {decided + 1}/{iterations}" if isinstance(iterations, int) else f"iteration {decided + 1}"


# Each multi-trial method's own state keys (see strategies/<method>/tuner.py), read as plain JSON: no tuner import.
STEP_OF: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "hill_climbing": _hill_climbing_step,
    "layer_pruning": _layer_pruning_step,
    "stagewise": _stagewise_step,
}


def search_step(state: dict[str, Any] | None) -> str | None:
    """Where a multi-trial search is ("step 2/3", "search over"); None without a state or for an unknown method."""
    if not isinstance(state, dict):
        return None
    if state.get("finished"):
        return "search over" + (f" ({state['error']})" if state.get("error") else "")
    return STEP_OF.get(str(state.get("method")), lambda _: None)(state)


def search_jobs(state: dict[str, Any] | None) -> tuple[int, int] | None:
    """(ended, all) of a multi-trial search's jobs; None without a state."""
    jobs = state.get("jobs") if isinstance(state, dict) else None
    if not isinstance(jobs, dict):
        return None
    return sum(isinstance(job, dict) and job.get("status") in ENDED for job in jobs.values()), len(jobs)


def status_of(trials: list[dict], state: dict[str, Any] | None, started: float, *, experiment: str = "RUNNING",
              now: float | None = None, progress: Mapping[str, Any] | None = None) -> Status:
    """The status of an experiment from NNI's trial-jobs list, its tuner's state (or None) and when it started
    (time.time() seconds); `progress`: trial id -> its last intermediate metrics, for running trials."""
    progress = progress or {}

    def view(trial: dict) -> TrialView:
        trial_id = str(trial.get("trialJobId"))
        latest = progress.get(trial_id)
        epoch = latest.get("epoch") if isinstance(latest, dict) else None
        return TrialView(id=trial_id, status=str(trial.get("status")), job=_job_of(trial),
                         metric=_score(_final_metric(trial)), latest=_score(latest),
                         epoch=epoch if isinstance(epoch, int) else None)

    views = tuple(view(trial) for trial in trials)
    scored = [view for view in views if view.status == "SUCCEEDED" and view.metric is not None]
    best = max(scored, key=lambda view: view.metric) if scored else None  # the first of equals: the earliest
    elapsed = max(0.0, (time.time() if now is None else now) - started)
    return Status(elapsed=elapsed, experiment=experiment, trials=views, best=best, step=search_step(state),
                  jobs=search_jobs(state))


# ---- text ---------------------------------------------------------------------------------------------------
def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def metric_text(value: float) -> str:
    return f"{value:.4f}"


def status_line(status: Status) -> str:
    """The one-line summary: `0:12:34 RUNNING | 5 succeeded, 2 running, 1 failed | best 0.9123 (...) | step ...`."""
    running = [f"{trial.name} epoch {trial.epoch}: {metric_text(trial.latest)}" for trial in status.trials
               if trial.status == "RUNNING" and trial.latest is not None and trial.epoch is not None]
    counts = [f"{status.succeeded} succeeded", f"{status.running} running" + (f" ({', '.join(running)})" if running else "")]
    counts += [f"{n} {word}" for n, word in ((status.waiting, "waiting"), (status.failed, "failed"),
                                                (status.cancelled, "cancelled")) if n]
    parts = [f"{clock(status.elapsed)} {status.experiment}", ", ".join(counts)]
    if status.best is not None:
        parts.append(f"best {metric_text(status.best.metric)} ({status.best.name})")
    search = [status.step] if status.step else []
    if status.jobs is not None:
        search.append(f"{status.jobs[0]}/{status.jobs[1]} jobs ended")
    if search:
        parts.append(", ".join(search))
    return " | ".join(parts)


def changes(before: Status | None, after: Status) -> list[str]:
    """The lines a log gets between two polls: trials that started or ended, a better best, a new step (not a
    job count: each job's end has its trial's line already)."""
    if before is None:  # the first poll: where things stand, in one line (a resume may bring many trials)
        return [status_line(after)]
    lines = []
    previous = {trial.id: trial.status for trial in before.trials}
    for trial in after.trials:
        was = previous.get(trial.id)
        if trial.status == was:
            continue
        if trial.status == "RUNNING":
            lines.append(f"trial {trial.name} started")
        elif trial.status in ("SUCCEEDED", "FAILED", *CANCELLED_STATES):
            result = f": default {metric_text(trial.metric)}" if trial.metric is not None else ""
            lines.append(f"trial {trial.name} {trial.status.lower().replace('_', ' ')}{result}")
    if after.best is not None and (before.best is None or after.best.metric > before.best.metric):
        lines.append(f"best so far {metric_text(after.best.metric)} ({after.best.name})")
    if after.step != before.step and after.step is not None:
        lines.append(f"search: {after.step}")
    return [f"[{clock(after.elapsed)}] {line}" for line in lines]


# ---- renderers ----------------------------------------------------------------------------------------------
class ChangeLog:
    """Plain lines, one per change; what `--wait` prints when stdout is a file or a pipe."""

    def __init__(self, out: TextIO):
        self.out = out
        self.last: Status | None = None

    def show(self, status: Status) -> None:
        lines = changes(self.last, status)
        self.last = status
        if lines:
            print("\n".join(lines), file=self.out, flush=True)

    def close(self) -> None:
        pass


def terminal_size(out: TextIO) -> tuple[int, int]:
    """(columns, lines) of the terminal, 0 where unknown: a pty that reports no size (`script`, some CI runners)."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (AttributeError, OSError, ValueError):
        return 0, 0
    return size.columns, size.lines


class TerminalStatus:
    """One status line redrawn in place, cut to the terminal's width (tqdm's status printer)."""

    # On a pty of size 0 x 0, tqdm cuts every line to nothing and counts -1 rows, showing no line at all.
    FALLBACK_SIZE = (120, 24)

    def __init__(self, out: TextIO):
        from tqdm import tqdm

        columns, lines = terminal_size(out)
        # bar_format {desc}: no bar (a search has no known total); leave: the last state stays on screen.
        self.bar = tqdm(total=None, bar_format="{desc}", file=out, leave=True, dynamic_ncols=columns > 0,
                        ncols=None if columns > 0 else self.FALLBACK_SIZE[0],
                        nrows=None if lines > 0 else self.FALLBACK_SIZE[1])

    def show(self, status: Status) -> None:
        self.bar.set_description_str(status_line(status), refresh=True)

    def close(self) -> None:
        self.bar.close()


def renderer_for(out: TextIO) -> ChangeLog | TerminalStatus:
    return TerminalStatus(out) if out.isatty() else ChangeLog(out)


# ---- glue with the REST API ---------------------------------------------------------------------------------
def experiment_started(handle: ExperimentHandle) -> float:
    """When the experiment started, as time.time() seconds, from NNI's run-time counter (execDuration, which
    counts only the seconds it ran: a resumed search goes on from its earlier total); now if it cannot be read."""
    try:
        profile = rest(handle.port, "experiment", token=handle.token)
        return time.time() - float(profile.get("execDuration") or 0)
    except (urllib.error.URLError, OSError, ValueError, TypeError, AttributeError):
        return time.time()


def read_state(handle: ExperimentHandle) -> dict[str, Any] | None:
    """The tuner's state, or None: a state file being unreadable is reported by the tuner, not by the display."""
    try:
        return tuner_state(handle)
    except StateError:
        return None


def latest_intermediate(handle: ExperimentHandle, trial_id: str) -> Any:
    """A trial's last intermediate metric (its last epoch's report), or None."""
    try:
        records = rest(handle.port, f"metric-data/{trial_id}", token=handle.token)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    periodical = [record for record in records or [] if record.get("type") == "PERIODICAL"]
    return decode_metric(periodical[-1]["data"]) if periodical else None


def current_status(handle: ExperimentHandle, experiment: str, trials: list[dict], started: float) -> Status:
    """status_of with the state file and the running trials' last epochs (one REST call per running trial)."""
    progress = {str(trial.get("trialJobId")): latest_intermediate(handle, str(trial.get("trialJobId")))
                for trial in trials if trial.get("status") == "RUNNING"}
    return status_of(trials, read_state(handle), started, experiment=experiment, progress=progress)


class LiveStatus:
    """wait_for_experiment's on_poll: the experiment's status on `out`, redrawn or logged as it changes."""

    def __init__(self, handle: ExperimentHandle, out: TextIO | None = None, started: float | None = None):
        self.handle = handle
        self.started = experiment_started(handle) if started is None else started
        self.renderer = renderer_for(out or sys.stdout)
        self.broken = False

    def __call__(self, experiment: str, trials: list[dict]) -> None:
        if self.broken:
            return
        try:
            self.renderer.show(current_status(self.handle, experiment, trials, self.started))
        except Exception as error:  # noqa: BLE001 - a display fault must not end (and stop) a running search
            self.broken = True
            print(f"resnas: live status off ({type(error).__name__}: {error})", file=sys.stderr)

    def close(self) -> None:
        try:
            self.renderer.close()
        except Exception:  # noqa: BLE001 - as above: the search's result is printed next, whatever this did
            pass
