"""Every failure says why: a config that would fail every trial is refused in one sentence naming the fix, a bad
--port is argparse's one line, and a search that ends with failed trials prints each one's error line."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from strategies.cli import main
from strategies.cli.main import build_parser
from strategies.launch.config import ConfigError, DataFilesError, load_experiment_config
from strategies.launch.trial_errors import last_error_line, trial_error, trial_stderr

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "tests" / "fixtures" / "launcher"
CIFAR10_FILES = [*(f"data_batch_{index}" for index in range(1, 6)), "test_batch", "batches.meta"]


def write_config(tmp_path: Path, source: Path, name: str = "experiment.yml", **changes) -> Path:
    config = yaml.safe_load(source.read_text())
    for key, value in changes.items():
        if key == "classArgs":
            config["tuner"]["classArgs"].update(value)
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def grid_config(tmp_path: Path, **changes) -> Path:
    """The launcher fixture (GridSearch, `python trial.py`) beside its trial.py in tmp_path."""
    (tmp_path / "trial.py").write_text((LAUNCHER / "trial.py").read_text())
    return write_config(tmp_path, LAUNCHER / "experiment.yml", **changes)


def resnas_config(tmp_path: Path, **class_args) -> Path:
    """The quickstart (ProxylessTuner on digits) with its trials run from the repository."""
    return write_config(tmp_path, REPO / "nni_configs" / "quickstart.yml", trialCodeDirectory=str(REPO),
                        classArgs=class_args)


def refusal(path: Path, **options) -> str:
    with pytest.raises(ConfigError) as refused:
        load_experiment_config(path, **options)
    message = str(refused.value)
    assert "\n" not in message and not message.rstrip().endswith(":")
    return message


# ---- the trial command -------------------------------------------------------------------------------------
def test_a_trial_command_running_a_module_that_does_not_exist_is_refused(tmp_path):
    message = refusal(grid_config(tmp_path, trialCommand="python -m no_such_trial_module"))
    assert "no module 'no_such_trial_module' can be found from trialCodeDirectory" in message
    assert message.endswith("fix the module name or trialCodeDirectory.")


def test_a_resnas_tuner_needs_the_resnas_trial_entry_point(tmp_path):
    message = refusal(write_config(tmp_path, REPO / "nni_configs" / "quickstart.yml",
                                   trialCommand="python -m strategies.trail", trialCodeDirectory=str(REPO)))
    assert "does not run the resnas trial" in message and "strategies.proxyless.ProxylessTuner" in message
    assert message.endswith("set trialCommand: python -m strategies.trial.")
    # the shipped forms: plain, and with an environment prefix
    load_experiment_config(resnas_config(tmp_path))
    load_experiment_config(write_config(tmp_path, REPO / "nni_configs" / "quickstart.yml", name="env.yml",
                                        trialCommand="OMP_NUM_THREADS=1 python -m strategies.trial",
                                        trialCodeDirectory=str(REPO)))


def test_a_trial_command_running_a_missing_file_is_refused_and_the_fixtures_pass(tmp_path):
    message = refusal(grid_config(tmp_path, trialCommand="python trail.py"))
    assert f"runs trail.py, which is not a file under trialCodeDirectory {tmp_path}" in message
    assert load_experiment_config(grid_config(tmp_path))["trialCommand"] == "python trial.py"


# ---- counts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,expected", [
    ("trialConcurrency", 0, "trialConcurrency must be at least 1, got 0; set it to how many trials may run"),
    ("maxTrialNumber", 0, "maxTrialNumber must be at least 1, got 0; set it to the most trials"),
    ("trialGpuNumber", -1, "trialGpuNumber must be at least 0, got -1; set it to the GPUs each trial needs"),
])
def test_a_count_out_of_range_is_one_sentence_naming_the_key(tmp_path, key, value, expected):
    assert expected in refusal(grid_config(tmp_path, **{key: value}))


def test_a_bare_nni_assert_still_names_the_key_and_the_exception(tmp_path):
    message = refusal(grid_config(tmp_path, maxExperimentDuration="0h"))
    assert "NNI refused maxExperimentDuration (AssertionError in `assert self.max_experiment_duration" in message


def test_validate_of_concurrency_0_prints_a_sentence_after_the_file_name(tmp_path, capsys):
    path = grid_config(tmp_path, trialConcurrency=0)
    assert main(["validate", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"resnas validate: {path}: trialConcurrency must be at least 1")


# ---- data files (local training service) -------------------------------------------------------------------
def test_cifar10_without_its_files_is_refused_in_the_trials_words(tmp_path, capsys):
    path = resnas_config(tmp_path, dataset="cifar10", data_dir=str(tmp_path / "data"), image_size=33)
    assert main(["validate", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    where = tmp_path / "data" / "cifar-10-batches-py"
    assert f"CIFAR-10 files not found under {where}; put the extracted archive there" in error
    assert error.endswith("(or pass --no-data-check to check it for another machine).") and "\n" not in error
    # the trial's own sentence starts the same way
    from trainers.datasets import DATASETS, DataError

    with pytest.raises(DataError) as trial:
        DATASETS["cifar10"].read(DATASETS["cifar10"].info, tmp_path / "data", True, False)
    assert str(trial.value).startswith(f"CIFAR-10 files not found under {where} ")
    assert main(["validate", "--no-data-check", str(path)]) == 0
    assert "ok (data not checked)" in capsys.readouterr().out


def test_a_relative_data_dir_is_read_from_trial_code_directory_as_the_trial_reads_it(tmp_path):
    code = tmp_path / "code"
    files = code / "data" / "cifar-10-batches-py"
    files.mkdir(parents=True)
    for name in CIFAR10_FILES[:-2]:
        (files / name).write_bytes(b"")
    path = write_config(tmp_path, REPO / "nni_configs" / "quickstart.yml", trialCodeDirectory=str(REPO),
                        classArgs={"dataset": "cifar10", "data_dir": str(code / "data"), "image_size": 33})
    message = refusal(path, check_data=True)
    assert f"under {files} (no test_batch)" in message
    for name in CIFAR10_FILES:
        (files / name).write_bytes(b"")
    # relative: resolved against trialCodeDirectory (NNI's local service starts trials there), not the shell's cwd
    (code / "strategies").symlink_to(REPO / "strategies")
    relative = write_config(tmp_path, REPO / "nni_configs" / "quickstart.yml", name="relative.yml",
                            trialCodeDirectory=str(code), classArgs={"dataset": "cifar10", "image_size": 33})
    load_experiment_config(relative, check_data=True)


def test_a_missing_image_folder_is_refused_and_mismatched_classes_too(tmp_path):
    folder = tmp_path / "animals"
    path = resnas_config(tmp_path, dataset="imagefolder", data_dir=str(folder), image_size=64)
    with pytest.raises(DataFilesError, match=rf"no image folder at {folder / 'train'}; put one subfolder"):
        load_experiment_config(path, check_data=True)
    for split, classes in (("train", "ab"), ("test", "a")):
        for name in classes:
            (folder / split / name).mkdir(parents=True)
    assert "has the classes ['a'], train/ has ['a', 'b']" in refusal(path, check_data=True)
    (folder / "test" / "b").mkdir()
    load_experiment_config(path, check_data=True)


def test_shipped_data_needs_no_files_and_other_machines_are_not_checked(tmp_path):
    load_experiment_config(REPO / "nni_configs" / "quickstart.yml", check_data=True)  # digits
    cifar = resnas_config(tmp_path, dataset="cifar10", data_dir=str(tmp_path / "none"), image_size=33)
    load_experiment_config(cifar)  # the default: the config itself, as check_gpus
    with pytest.raises(DataFilesError):
        load_experiment_config(cifar, check_gpus=True)  # what `resnas create` asks: this machine can run it
    (tmp_path / "key").write_text("")  # NNI wants the key file to exist; nothing connects
    remote = write_config(tmp_path, cifar, name="remote.yml", trainingService={
        "platform": "remote", "machineList": [{"host": "127.0.0.1", "user": "u", "sshKeyFile": str(tmp_path / "key")}]})
    load_experiment_config(remote, check_data=True)  # the data lives on the workers


# ---- --port --------------------------------------------------------------------------------------------------
def test_port_99999_is_argparses_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "strategies.cli", "create", "--config",
                             str(grid_config(tmp_path)), "--port", "99999"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert error.endswith("argument --port: 99999 is not a port number; use one from 1 to 65535")


@pytest.mark.parametrize("command", ["create --config x.yml", "resume abc", "quickstart"])
def test_port_takes_1_to_65535_only(command, capsys):
    parser = build_parser()
    for good in ("1", "65535"):
        assert parser.parse_args([*command.split(), "--port", good]).port == int(good)
    for bad in ("0", "65536", "-1", "http"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([*command.split(), "--port", bad])
        assert exited.value.code == 2
        assert "is not a port number; use one from 1 to 65535" in capsys.readouterr().err


# ---- failed trials' error lines ---------------------------------------------------------------------------
TRACEBACK = """/x/_pytree.py:21: `isinstance(treespec, LeafSpec)` is deprecated
  warnings.warn(
Traceback (most recent call last):
  File "/x/strategies/trial.py", line 44, in <module>
    sys.exit(main())
             ^^^^^^
  File "/x/trainers/datasets.py", line 101, in read
    raise DataError(
trainers.datasets.DataError: CIFAR-10 files not found under data/cifar-10-batches-py and could not be downloaded; \
put the extracted archive there or run once with network access.
/x/warnings.py:3: UserWarning: something at exit
  warnings.warn("something at exit")
"""
CHAINED = """Traceback (most recent call last):
  File "a.py", line 1, in <module>
KeyError: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 3, in <module>
ValueError: the one that ended it
"""


def test_the_error_line_is_the_last_tracebacks_exception_line():
    assert last_error_line(TRACEBACK).startswith("trainers.datasets.DataError: CIFAR-10 files not found under data/")
    assert last_error_line(CHAINED) == "ValueError: the one that ended it"
    no_traceback = "INFO starting\nno trial parameters: run this through `resnas create`.\n/x.py:1: UserWarning: w\n"
    assert last_error_line(no_traceback) == "no trial parameters: run this through `resnas create`."
    assert last_error_line("\n  \n") is None


def test_trial_errors_read_nni_3s_trial_folders(tmp_path):
    local = tmp_path / "environments" / "local-env" / "trials" / "AbC12"
    local.mkdir(parents=True)
    (local / "trial.stderr").write_text(TRACEBACK)
    assert trial_stderr(tmp_path, "AbC12") == local / "trial.stderr"
    assert trial_error(tmp_path, "AbC12").startswith("trainers.datasets.DataError: CIFAR-10 files not found")
    remote = tmp_path / "trials" / "Rem01"  # where NNI's remote service copies a trial's logs
    remote.mkdir(parents=True)
    (remote / "trial.stderr").write_text("")
    assert trial_error(tmp_path, "Rem01").startswith("nothing on its stderr")
    assert trial_error(tmp_path, "Gone1").startswith(f"no stderr of this trial under {tmp_path}")


def test_a_search_with_failed_trials_says_why_in_its_summary_and_printed_lines(tmp_path, monkeypatch, capsys):
    import strategies.launch as launch
    from strategies.launch import rest

    folder = tmp_path / "exp1"
    (folder / "environments" / "local-env" / "trials" / "T1").mkdir(parents=True)
    (folder / "environments" / "local-env" / "trials" / "T1" / "trial.stderr").write_text(TRACEBACK)
    jobs = [{"trialJobId": "T1", "status": "FAILED",
             "hyperParameters": [json.dumps({"parameter_id": 0, "parameters": {"job": "step0/with_reg"}})]},
            {"trialJobId": "T2", "status": "SUCCEEDED", "finalMetricData": [{"data": '{"default": 0.5}'}]}]
    monkeypatch.setattr(rest, "trial_jobs", lambda handle: jobs)
    monkeypatch.setattr(rest, "tuner_state", lambda handle: None)
    handle = SimpleNamespace(id="exp1", port=9, bind_host="127.0.0.1", url="http://127.0.0.1:9",
                             dashboard_url="http://127.0.0.1:9", folder=folder)
    summary = rest.experiment_summary(handle, "DONE")
    assert summary["trials"][0]["error"].startswith("trainers.datasets.DataError: CIFAR-10 files not found")
    assert "error" not in summary["trials"][1]

    monkeypatch.setattr(launch, "wait_for_experiment", lambda handle, timeout=None, on_poll=None: "DONE")
    monkeypatch.setattr(launch, "experiment_summary", rest.experiment_summary)
    monkeypatch.setattr(launch, "stop_experiment", lambda handle: None)
    from strategies.cli.main import follow_experiment

    follow_experiment(handle, wait=True, timeout=None, keep=False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("trial T1 (job step0/with_reg) failed: trainers.datasets.DataError: CIFAR-10 files")
    assert json.loads(lines[-1])["trials"] == [{"id": "T1", "status": "FAILED", "error": summary["trials"][0]["error"]},
                                               {"id": "T2", "status": "SUCCEEDED"}]
