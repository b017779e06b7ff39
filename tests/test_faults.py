"""Faults a user meets, and what survives them: a payload that would run code, a killed trial, a killed tuner or
manager, a tuner that raises, a full disk, a corrupt state file.

The e2e tests run the real NNI manager on 127.0.0.1 with tests/fixtures/faults: a real MultiTrialTuner (state
file, re-issue, resume, the payload guard) whose stand-in trials take a second instead of minutes of training.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import worker_port
from strategies.launch.processes import manager_pids, tuner_pids
from strategies.launch.watchdog import tuner_error_line
from strategies.multi_trial.job_files import ERROR_FILE, job_lock
from strategies.multi_trial.state import STATE_FILE, StateError, load_state
from strategies.payload_guard import guard_dispatcher_payloads, plain_load, refusing_code_payloads
from strategies.trial import run_trial
from trainers.atomic import DiskFullError

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "faults"
sys.path.insert(0, str(FIXTURE))
from tuner import FaultTuner  # noqa: E402 - the fixture tuner, importable as the manager imports it

RUN_A_COMMAND = [{"parameter": {"x": {"__symbol__": "path:os.system", "__args__": ["touch {marker}"]}}, "value": 1.0}]


# ---- a payload that would run code --------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [
    {"__symbol__": "path:os.system", "__args__": ["touch {marker}"]},
    {"__nni_type__": "path:os.system"},
    {"__instance_type__": ["os", "system"], "attributes": {}},
    {"__nni_obj__": "gASVLgAAAAAAAACMAm9zlIwGc3lzdGVtlJOUjAx0b3VjaCB7bWFya2VyfZSFlFKULg=="},
])
def test_a_code_bearing_payload_is_read_as_null_with_a_warning(payload, tmp_path, caplog):
    marker = tmp_path / "ran"
    text = json.dumps([{"parameter": {"x": payload}, "value": 1.0}]).replace("{marker}", str(marker))
    assert plain_load(text) == [{"parameter": {"x": None}, "value": 1.0}]
    assert not marker.exists() and "refused a payload from the NNI manager" in caplog.text


def test_the_dispatcher_and_the_trial_read_the_managers_messages_as_plain_json(tmp_path):
    import nni
    import nni.runtime.msg_dispatcher as dispatcher
    import nni.runtime.msg_dispatcher_base as dispatcher_base
    from nni.runtime.trial_command_channel import local_legacy

    guard_dispatcher_payloads()
    assert dispatcher.load is plain_load and dispatcher_base.load is plain_load
    saved = nni.load
    with refusing_code_payloads():
        assert nni.load is plain_load and local_legacy.load is plain_load
    assert nni.load is saved and local_legacy.load is not plain_load
    assert plain_load(fp=open(_write(tmp_path / "p.json", '{"parameters": {"a": 1}}'))) == {"parameters": {"a": 1}}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- trials that fail or are killed (the tuner's side, without the manager) ----------------------------------
def issue(tuner, parameter_id: int) -> dict:
    return tuner.generate_parameters(parameter_id)


def test_a_killed_trial_is_issued_once_more_and_a_second_kill_fails_the_job(tmp_path):
    tuner = FaultTuner(jobs=1, state_dir=str(tmp_path))
    first = issue(tuner, 0)
    tuner.trial_end(0, success=False)  # no error.txt: killed by a signal (NNI: USER_CANCELED)
    assert tuner.jobs["job0"]["status"] == "pending" and tuner.jobs["job0"]["restarts"] == 1
    assert issue(tuner, 1) == first
    tuner.trial_end(1, success=False)
    assert tuner.jobs["job0"]["status"] == "failed"
    assert tuner.jobs["job0"]["error"].startswith("its trial was killed 2 times without an error of its own")
    assert tuner.state["finished"] and tuner.state["error"] == "every job failed"


def test_a_trial_that_raised_fails_its_job_at_once_with_its_error_line(tmp_path):
    tuner = FaultTuner(jobs=1, state_dir=str(tmp_path))
    params = issue(tuner, 0)
    with pytest.raises(Exception):
        run_trial(params, tmp_path / "trial", None)  # "faults" is no method strategies.trial runs
    assert (Path(params["out_dir"]) / ERROR_FILE).read_text().startswith("SettingsError: ")
    tuner.trial_end(0, success=False)
    assert tuner.jobs["job0"]["status"] == "failed" and tuner.jobs["job0"]["error"].startswith("SettingsError: ")


def test_a_trial_end_nni_reports_under_the_other_jobs_parameters_reaches_the_job_that_ended(tmp_path):
    # NNI 3.0 can give two trials started together each other's parameters and report an end with the other's.
    tuner = FaultTuner(jobs=2, state_dir=str(tmp_path))
    job0, job1 = Path(issue(tuner, 0)["out_dir"]), Path(issue(tuner, 1)["out_dir"])
    with job_lock(job0):
        pass  # job0's trial took the job and died without a result
    holding, release = threading.Event(), threading.Event()

    def job1_running() -> None:
        with job_lock(job1):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=job1_running)
    thread.start()
    holding.wait(10)
    tuner.trial_end(1, success=False)  # reported as job1's, which is still running
    release.set()
    thread.join()
    assert tuner.jobs["job0"]["status"] == "pending" and tuner.jobs["job0"]["restarts"] == 1
    assert tuner.jobs["job1"]["status"] == "issued"


def test_a_job_run_while_an_orphaned_trial_holds_it_waits_for_that_trial(tmp_path):
    order = []

    def orphan() -> None:
        with job_lock(tmp_path):
            order.append("orphan starts")
            time.sleep(0.5)
            order.append("orphan ends")

    thread = threading.Thread(target=orphan)
    thread.start()
    time.sleep(0.1)
    with job_lock(tmp_path):
        order.append("re-issued trial runs")
    thread.join()
    assert order == ["orphan starts", "orphan ends", "re-issued trial runs"]


# ---- the state file: a full disk, a corrupt file --------------------------------------------------------------
def test_a_full_disk_while_the_state_is_saved_keeps_the_previous_state_and_resume_reissues_the_job(tmp_path,
                                                                                                   monkeypatch):
    tuner = FaultTuner(jobs=2, state_dir=str(tmp_path))
    first, second = issue(tuner, 0), issue(tuner, 1)
    before = (tmp_path / STATE_FILE).read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DiskFullError, match="free disk space and rerun"):
        tuner.receive_trial_result(0, first, {"default": 0.5})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (tmp_path / STATE_FILE).read_bytes() == before  # intact, and no temp file beside it
    assert [path.name for path in tmp_path.iterdir()] == [STATE_FILE]
    resumed = FaultTuner(jobs=2, state_dir=str(tmp_path))  # after freeing space: `resnas resume`
    assert [issue(resumed, 5)["job"], issue(resumed, 6)["job"]] == ["job0", "job1"]
    assert second["job"] == "job1"


def test_a_corrupt_state_file_stops_the_tuner_in_one_sentence_and_is_left_as_it_was(tmp_path):
    FaultTuner(jobs=1, state_dir=str(tmp_path))
    (tmp_path / STATE_FILE).write_text('{"jobs": {"job0": ')
    with pytest.raises(StateError) as refused:
        FaultTuner(jobs=1, state_dir=str(tmp_path))
    message = str(refused.value)
    assert "is unreadable" in message and "move it away to start the search over" in message and "\n" not in message
    assert (tmp_path / STATE_FILE).read_text() == '{"jobs": {"job0": '
    with pytest.raises(StateError, match="not a resnas search state"):
        load_state(_write(tmp_path / "other.json", "[1, 2]"))


def test_the_tuners_error_is_the_last_line_of_its_traceback(tmp_path):
    log = _write(tmp_path / "dispatcher.log", "[2026-12-01 15:16:05] INFO (nni) Dispatcher started\n"
                 "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                 "strategies.multi_trial.state.StateError: the search's state file s.json is unreadable\n")
    assert tuner_error_line(log) == "strategies.multi_trial.state.StateError: the search's state file s.json is unreadable"
    log.write_text("[2026-12-01 15:16:05] ERROR (nni.main/MainThread) it broke\n")
    assert tuner_error_line(log) == "nni.main/MainThread: it broke"


# ---- on the real manager ----------------------------------------------------------------------------------------
def faults_experiment(tmp_path: Path, sleep: float = 1.0, sleep_step: float = 0.0, **class_args) -> Path:
    """tests/fixtures/faults with its own working directory, class_args, and trials that take `sleep` seconds
    (`sleep_step` more for each later job)."""
    config = yaml.safe_load((FIXTURE / "experiment.yml").read_text())
    config["trialCommand"] = f"FIXTURE_SLEEP={sleep} FIXTURE_SLEEP_STEP={sleep_step} {sys.executable} trial.py"
    config["trialCodeDirectory"] = config["tuner"]["codeDirectory"] = str(FIXTURE)
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    config["tuner"]["classArgs"].update(class_args)
    path = tmp_path / "experiment.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(condition, timeout: float = 180.0, what: str = "the condition"):
    # 180 s: a trial starts in ~5 s on a quiet machine, but with a second suite or benchmark beside it on 2 cores
    # it took over 60 s (the manager, the tuner and the trial each start a Python with NNI)
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def resnas(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strategies.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def create_waiting(config: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "strategies.cli", "create", "--config", str(config), "--port",
                             str(port), "--wait"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def post(handle, route: str, body) -> int:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{handle.port}/api/v1/nni/{route}", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    if getattr(handle, "token", None):  # an attacker holding the token: the tuner must still refuse the payload
        request.add_header("Authorization", f"token {handle.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


@pytest.mark.e2e
def test_a_payload_that_would_run_code_is_refused_and_a_killed_trial_runs_once_more(tmp_path):
    from strategies.launch import create_experiment, experiment_summary, stop_experiment, wait_for_experiment

    marker = tmp_path / "ran"
    handle = create_experiment(faults_experiment(tmp_path, sleep=3, jobs=3), port=worker_port(8821))
    job0 = handle.folder / "checkpoint" / "faults" / "job0"
    try:
        first_pid = wait_for(lambda: read_int(job0 / "pid"), what="job0's trial")
        payload = json.loads(json.dumps(RUN_A_COMMAND).replace("{marker}", str(marker)))
        assert post(handle, "experiment/import-data", payload) == 200  # NNI accepts it and hands it to the tuner
        os.kill(first_pid, signal.SIGKILL)  # job0's trial dies without an error of its own
        status = wait_for_experiment(handle, poll_seconds=1, timeout=300)  # 3 jobs of 3 s and a re-issued one: ~40 s quiet, 130 s on a loaded 2-core CI
        summary = experiment_summary(handle, status)
    finally:
        stop_experiment(handle)
    assert not marker.exists()
    assert "refused a payload from the NNI manager carrying __args__, __symbol__" in (
        handle.folder / "log" / "dispatcher.log").read_text()
    state = load_state(handle.folder / "checkpoint" / STATE_FILE)
    assert state["finished"] and state["error"] is None and state["summary"]["default"] == 0.2
    assert state["jobs"]["job0"]["status"] == "done" and state["jobs"]["job0"]["restarts"] == 1
    assert read_int(job0 / "runs") == 2 and read_int(job0 / "pid") != first_pid
    assert sorted(trial["status"] for trial in summary["trials"]) == ["SUCCEEDED"] * 3 + ["USER_CANCELED"]


@pytest.mark.e2e
def test_a_killed_manager_resumes_on_the_same_port_and_an_orphaned_trial_counts(tmp_path):
    config = faults_experiment(tmp_path, sleep=1, sleep_step=8, jobs=2)  # job0 takes 1 s, job1 9 s
    port = worker_port(8823)  # resumed on the same port
    waiting = create_waiting(config, port)
    experiment_id = waiting.stdout.readline().split()[1]
    folder = tmp_path / "nni-experiments" / experiment_id
    state_path, jobs = folder / "checkpoint" / STATE_FILE, folder / "checkpoint" / "faults"

    def job0_done_job1_running() -> bool:
        state = load_state(state_path) or {"jobs": {}}
        return state["jobs"].get("job0", {}).get("status") == "done" and (jobs / "job1" / "pid").exists()

    wait_for(job0_done_job1_running, timeout=90, what="job0 done and job1 running")
    orphaned_tuner = tuner_pids(folder)
    assert orphaned_tuner
    os.kill(manager_pids(experiment_id)[0], signal.SIGKILL)  # no goodbye: the tuner and job1's trial live on
    _, stderr = waiting.communicate(timeout=60)
    # `create --wait` on a manager that died: one sentence naming its log and the fix, exit code 2, no traceback
    assert waiting.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert f"the NNI manager of experiment {experiment_id} stopped answering" in stderr
    assert f"{experiment_id}/log/nnimanager.log" in stderr and f"resnas resume {experiment_id}" in stderr

    resumed = resnas("resume", experiment_id, "--dir", str(tmp_path / "nni-experiments"), "--port", str(port), "--wait")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    line = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert line["dashboard"] == f"http://127.0.0.1:{port}" and line["best"]["default"] == 0.1
    assert not any(Path(f"/proc/{pid}").exists() for pid in orphaned_tuner)  # ended by resume, found by its folder
    state = load_state(state_path)
    assert state["finished"] and state["error"] is None
    # Nothing ran twice: job0 was not re-run, and job1's re-issued trial waited for the orphaned one and used its result.
    assert read_int(jobs / "job0" / "runs") == 1 and read_int(jobs / "job1" / "runs") == 1

    # A corrupt state file: resume refuses in one sentence before starting anything, and leaves the file as it is.
    state_path.write_text('{"jobs": ')
    refused = resnas("resume", experiment_id, "--dir", str(tmp_path / "nni-experiments"), "--port", str(port))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "is unreadable" in refused.stderr and state_path.read_text() == '{"jobs": '
    assert not manager_pids(experiment_id)


@pytest.mark.e2e
def test_a_tuner_that_raises_or_is_killed_ends_wait_with_one_line_naming_its_log(tmp_path):
    # Two experiments at once (each mostly waits on NNI): one whose tuner raises at start, one whose tuner is killed.
    raising = create_waiting(faults_experiment(tmp_path / "raises", raise_at_start=True), worker_port(8824))
    killed = create_waiting(faults_experiment(tmp_path / "killed", sleep=60, jobs=2), worker_port(8825))
    killed_id = killed.stdout.readline().split()[1]
    folder = tmp_path / "killed" / "nni-experiments" / killed_id
    wait_for(lambda: (folder / "checkpoint" / "faults" / "job0" / "pid").exists(), what="the first trial")
    for pid in tuner_pids(folder):
        os.kill(pid, signal.SIGKILL)

    _, stderr = raising.communicate(timeout=120)
    assert raising.returncode == 1 and len(stderr.strip().splitlines()) == 1, stderr[-2000:]
    assert "ended in ERROR: the tuner failed with 'RuntimeError: the fault fixture tuner was told to fail at start'" \
        in stderr and "/log/dispatcher.log" in stderr
    _, stderr = killed.communicate(timeout=120)
    assert killed.returncode == 1 and len(stderr.strip().splitlines()) == 1, stderr[-2000:]
    assert f"the tuner of experiment {killed_id} died (no error in its log" in stderr
    assert f"{killed_id}/log/dispatcher.log" in stderr and f"resnas resume {killed_id}" in stderr
    assert not manager_pids(killed_id)  # --wait stopped what was left of it
