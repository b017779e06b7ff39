"""The real NNI manager, started the way `resnas create` starts it: bound to 127.0.0.1, followed over REST."""

import shutil
import subprocess

import pytest
import yaml

from conftest import worker_port
from strategies.launch import ConfigError, LaunchError, load_experiment_config
from strategies.launch.rest import ExperimentHandle
from strategies.launch.watchdog import manager_error_line
from strategies.reporting import decode_metric
from strategies.launch import (
    create_experiment,
    experiment_summary,
    listening_hosts,
    stop_experiment,
    wait_for_experiment,
)

FIXTURE = "tests/fixtures/launcher"


def fixture_experiment(tmp_path, **changes):
    folder = tmp_path / "experiment"
    shutil.copytree(FIXTURE, folder)
    config = yaml.safe_load((folder / "experiment.yml").read_text())
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    config.update(changes)
    (folder / "experiment.yml").write_text(yaml.safe_dump(config))
    return folder / "experiment.yml"


@pytest.mark.e2e
def test_real_manager_runs_trials_on_localhost_only_and_reports_over_rest(tmp_path):
    handle = create_experiment(fixture_experiment(tmp_path), port=worker_port(8765))
    try:
        assert listening_hosts(handle.port) == {"127.0.0.1"}
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        status = wait_for_experiment(handle, poll_seconds=1, timeout=240)
        summary = experiment_summary(handle, status)
    finally:
        stop_experiment(handle)
    assert summary["status"] == "DONE"
    assert [trial["status"] for trial in summary["trials"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert summary["best"] == {"default": 0.75, "params": 123, "flops": 456, "export_dir": "/tmp/export-0.75"}
    assert summary["export_dir"] == "/tmp/export-0.75"
    # Stopped means stopped: nothing listens on the port any more.
    assert listening_hosts(handle.port) == set()


def test_a_typo_in_an_nnictl_key_is_one_sentence_with_the_fix(tmp_path):
    path = fixture_experiment(tmp_path, trialConcurency=2)
    with pytest.raises(ConfigError) as error:
        load_experiment_config(path)
    message = str(error.value)
    assert "unknown key 'trialConcurency'" in message and "did you mean 'trialConcurrency'" in message
    assert "\n" not in message


def test_nothing_is_launched_when_the_config_is_bad(tmp_path, monkeypatch):
    launched = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: launched.append(a))
    with pytest.raises(ConfigError):
        create_experiment(fixture_experiment(tmp_path, maxTrialNumber="many"))
    assert launched == []


def test_missing_config_file_names_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; pass one of the files in nni_configs/"):
        load_experiment_config(tmp_path / "nope.yml")


def test_final_metrics_are_decoded_even_when_double_encoded():
    assert decode_metric('"{\\"default\\": 0.5}"') == {"default": 0.5}
    assert decode_metric('{"default": 0.5}') == {"default": 0.5}
    assert decode_metric("0.5") == 0.5


NNI_LOG = """[2026-12-01 12:35:44] INFO (main) Start NNI manager
[2026-12-01 12:35:45] ERROR (TaskScheduler) Failed to collect GPU info: no GPU
[2026-12-01 12:35:45] WARNING (NNIManager) It is not supposed to receive more trials after NO_MORE_TRIAL is set
[2026-12-01 12:35:46] ERROR (NNIManager) TaskScheduler: Failed to collect GPU info
"""


def test_the_manager_logs_last_error_line_is_read_without_its_timestamp(tmp_path):
    log = tmp_path / "nnimanager.log"
    log.write_text(NNI_LOG)
    assert manager_error_line(log) == "NNIManager: TaskScheduler: Failed to collect GPU info"
    log.write_text(NNI_LOG.split("\n")[0])
    assert manager_error_line(log) is None and manager_error_line(tmp_path / "missing.log") is None


def test_waiting_on_a_dead_manager_ends_in_one_sentence_with_its_log_line(tmp_path):
    (tmp_path / "abc123" / "log").mkdir(parents=True)
    (tmp_path / "abc123" / "log" / "nnimanager.log").write_text(NNI_LOG)
    handle = ExperimentHandle("abc123", 9, "127.0.0.1", tmp_path / "x.yml", tmp_path)  # port 9: nothing listens
    with pytest.raises(LaunchError, match=r"stopped answering \(its log says 'NNIManager: TaskScheduler: Failed to "
                                          r"collect GPU info'\); see .*nnimanager.log.*resnas resume abc123"):
        wait_for_experiment(handle, poll_seconds=0.01)
