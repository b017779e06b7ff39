"""The live status of `resnas create --wait`: what it says about fake trial lists and tuner states, a log line per
change and never one per poll, a terminal line that renders, and a display that can never end the wait."""

import io
import json
from pathlib import Path

import pytest

from strategies.launch import rest
from strategies.launch.live_status import (
    ChangeLog,
    LiveStatus,
    TerminalStatus,
    changes,
    search_step,
    status_line,
    status_of,
)
from strategies.launch.rest import ExperimentHandle


def trial(trial_id: str, status: str, job: str | None = None, default: float | None = None) -> dict:
    """A trial as NNI's REST API lists it: parameters and final metric JSON-encoded (the metric twice)."""
    record = {"trialJobId": trial_id, "status": status}
    if job is not None:
        record["hyperParameters"] = [json.dumps({"parameter_id": 0, "parameters": {"job": job}})]
    if default is not None:
        record["finalMetricData"] = [{"data": json.dumps(json.dumps({"default": default}))}]
    return record


def hill_climbing_state(step: int, finished: bool = False) -> dict:
    return {"method": "hill_climbing", "settings": {"n_steps": 3}, "step": step, "finished": finished, "error": None,
            "jobs": {"start": {"status": "done"}, "step1/child0": {"status": "issued"}, "step1/parent": {"status": "failed"}}}


def test_status_counts_trials_finds_the_best_and_the_step():
    trials = [trial("A", "SUCCEEDED", "start", 0.5), trial("B", "RUNNING", "step1/child0"),
              trial("C", "FAILED", "step1/parent"), trial("D", "SUCCEEDED", "step1/child1", 0.75),
              trial("E", "WAITING"), trial("F", "USER_CANCELED")]
    status = status_of(trials, hill_climbing_state(1), started=100.0, now=175.0)
    assert (status.succeeded, status.running, status.failed, status.waiting, status.cancelled) == (2, 1, 1, 1, 1)
    assert status.best.id == "D" and status.best.metric == 0.75 and status.best.job == "step1/child1"
    assert status.elapsed == 75.0 and status.step == "step 1/3" and status.jobs == (2, 3)
    assert status_line(status) == ("0:01:15 RUNNING | 2 succeeded, 1 running, 1 waiting, 1 failed, 1 cancelled | "
                                   "best 0.7500 (D (step1/child1)) | step 1/3, 2/3 jobs ended")


def test_a_single_trial_method_has_no_step_and_no_best_before_a_result():
    status = status_of([trial("A", "RUNNING")], None, started=0.0, now=3725.0, experiment="RUNNING")
    assert status.step is None and status.best is None
    assert status_line(status) == "1:02:05 RUNNING | 0 succeeded, 1 running"


def test_a_running_trials_last_epoch_is_on_the_line():
    # A ProxylessNAS search is one trial for hours: its last reported epoch is all there is to watch.
    progress = {"A": {"default": 0.27, "epoch": 3, "gate_entropy": 0.7}, "B": None}
    status = status_of([trial("A", "RUNNING"), trial("B", "RUNNING")], None, 0.0, now=5, progress=progress)
    assert status_line(status) == "0:00:05 RUNNING | 0 succeeded, 2 running (A epoch 3: 0.2700)"


@pytest.mark.parametrize("state, expected", [
    (hill_climbing_state(0), "start net"),
    (hill_climbing_state(4), "final training"),
    (hill_climbing_state(2, finished=True), "search over"),
    ({"method": "layer_pruning", "settings": {"n_morphnet": 2, "n_insertions": 1}, "step": 3, "jobs": {}},
     "step 3/4"),
    ({"method": "layer_pruning", "settings": {"n_morphnet": 2, "n_insertions": 1, "morphnet_only": True}, "step": 1,
      "jobs": {"final": {"status": "issued"}}}, "final test and export"),
    ({"method": "stagewise", "settings": {"iterations": 5}, "decided": 1, "search_over": False, "jobs": {}},
     "iteration 2/5"),
    ({"method": "stagewise", "settings": {"iterations": 5}, "decided": 3, "search_over": True, "jobs": {}},
     "final training"),
    ({"method": "some_new_method", "jobs": {"a": {"status": "done"}}}, None),
])
def test_each_methods_step_is_read_from_its_own_state_keys(state, expected):
    assert search_step(state) == expected


def test_an_early_end_says_why():
    state = {**hill_climbing_state(0, finished=True), "error": "the start net's trial failed"}
    assert search_step(state) == "search over (the start net's trial failed)"


def test_the_log_gets_a_line_per_change_and_none_per_poll():
    out = io.StringIO()
    log = ChangeLog(out)
    polls = [
        ([trial("A", "WAITING", "start")], hill_climbing_state(0), 0),
        ([trial("A", "RUNNING", "start")], hill_climbing_state(0), 3),
        ([trial("A", "RUNNING", "start")], hill_climbing_state(0), 6),  # nothing changed: nothing printed
        ([trial("A", "SUCCEEDED", "start", 0.5), trial("B", "WAITING", "step1/child0")], hill_climbing_state(1), 9),
        ([trial("A", "SUCCEEDED", "start", 0.5), trial("B", "FAILED", "step1/child0")], hill_climbing_state(1), 12),
        ([trial("A", "SUCCEEDED", "start", 0.5), trial("B", "FAILED", "step1/child0")], hill_climbing_state(1), 15),
    ]
    for trials, state, now in polls:
        log.show(status_of(trials, state, started=0.0, now=now))
    assert out.getvalue().splitlines() == [
        "0:00:00 RUNNING | 0 succeeded, 0 running, 1 waiting | start net, 2/3 jobs ended",
        "[0:00:03] trial A (start) started",
        "[0:00:09] trial A (start) succeeded: default 0.5000",
        "[0:00:09] best so far 0.5000 (A (start))",
        "[0:00:09] search: step 1/3",
        "[0:00:12] trial B (step1/child0) failed",
    ]


def test_a_job_count_alone_prints_nothing():
    # The tuner records a job's end a poll or two before NNI marks its trial SUCCEEDED: that trial's line says it.
    more_ended = hill_climbing_state(1)
    more_ended["jobs"]["step1/child0"]["status"] = "done"
    before = status_of([trial("B", "RUNNING", "step1/child0")], hill_climbing_state(1), 0.0, now=1)
    after = status_of([trial("B", "RUNNING", "step1/child0")], more_ended, 0.0, now=2)
    assert after.jobs == (3, 3) and changes(before, after) == []


def test_a_better_best_is_logged_and_a_worse_result_is_not():
    before = status_of([trial("A", "SUCCEEDED", default=0.8), trial("B", "RUNNING")], None, 0.0, now=1)
    worse = status_of([trial("A", "SUCCEEDED", default=0.8), trial("B", "SUCCEEDED", default=0.7)], None, 0.0, now=2)
    better = status_of([trial("A", "SUCCEEDED", default=0.8), trial("B", "SUCCEEDED", default=0.9)], None, 0.0, now=2)
    assert changes(before, worse) == ["[0:00:02] trial B succeeded: default 0.7000"]
    assert changes(before, better)[-1] == "[0:00:02] best so far 0.9000 (B)"


def test_the_terminal_line_renders_and_redraws_in_place():
    out = io.StringIO()
    terminal = TerminalStatus(out)
    terminal.show(status_of([trial("A", "RUNNING")], None, 0.0, now=1))
    terminal.show(status_of([trial("A", "SUCCEEDED", default=0.9)], None, 0.0, now=2))
    terminal.close()
    written = out.getvalue()
    assert "\r" in written and written.rstrip().endswith("0:00:02 RUNNING | 1 succeeded, 0 running | best 0.9000 (A)")


def test_the_line_shows_on_a_terminal_that_reports_no_size(monkeypatch):
    # A fresh pty is 0 x 0 (as under `script` or some CI runners); tqdm alone would show nothing there. tqdm asks
    # for the size of sys.stdout and sys.stderr only: the pty is made sys.stdout.
    import os
    import pty
    import sys

    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as out:
        assert out.isatty() and os.get_terminal_size(out.fileno()) == (0, 0)
        monkeypatch.setattr(sys, "stdout", out)
        terminal = TerminalStatus(sys.stdout)
        terminal.show(status_of([trial("A", "RUNNING")], None, 0.0, now=1))
        terminal.close()
    shown = b""
    while True:  # everything written, in as many reads as the pty hands out; EIO once the follower is closed
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    shown = shown.decode()
    assert "0:00:01 RUNNING | 0 succeeded, 1 running" in shown


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def handle_in(folder: Path) -> ExperimentHandle:
    return ExperimentHandle("expid", 1, "127.0.0.1", folder / "config.yml", working_dir=folder)


def test_live_status_picks_the_renderer_by_isatty_and_reads_the_state_file(tmp_path):
    state_file = tmp_path / "expid" / "checkpoint" / "resnas_state.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps(hill_climbing_state(2)))
    assert isinstance(LiveStatus(handle_in(tmp_path), out=FakeTerminal(), started=0.0).renderer, TerminalStatus)
    out = io.StringIO()
    live = LiveStatus(handle_in(tmp_path), out=out, started=0.0)
    live("RUNNING", [trial("A", "RUNNING", "step2/child0")])
    live.close()
    assert out.getvalue().endswith("| step 2/3, 2/3 jobs ended\n")
    state_file.write_text("{ torn")  # an unreadable state file: the display goes on without a step
    live("RUNNING", [trial("A", "RUNNING", "step2/child0")])


def test_a_display_fault_never_ends_the_wait(tmp_path, capsys):
    live = LiveStatus(handle_in(tmp_path), out=io.StringIO(), started=0.0)
    live.renderer.show = lambda status: 1 / 0
    live("RUNNING", [])
    live("RUNNING", [])  # turned off after the first fault: one warning, not one per poll
    assert capsys.readouterr().err.count("live status off (ZeroDivisionError") == 1


def test_wait_for_experiment_hands_every_poll_to_on_poll(tmp_path, monkeypatch):
    answers = iter([{"status": "RUNNING"}, {"status": "DONE"}])
    monkeypatch.setattr(rest, "rest", lambda port, route, token=None: next(answers))
    monkeypatch.setattr(rest, "trial_jobs", lambda handle: [trial("A", "SUCCEEDED", default=0.5)])
    seen = []
    status = rest.wait_for_experiment(handle_in(tmp_path), poll_seconds=0, on_poll=lambda s, t: seen.append((s, len(t))))
    assert status == "DONE" and seen == [("RUNNING", 1), ("DONE", 1)]
