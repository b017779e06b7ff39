"""artifact_dir: a multi-trial search's job folders and state file on a mount every machine shares, one folder per
experiment; trial parameters name job files under a root a worker may swap (RESNAS_ARTIFACT_DIR); a worker that
cannot see it fails in one sentence; `resnas plot` and the REST side find the state file through the pointer
left in the checkpoint folder; searches without artifact_dir (and their old state files) work as before."""

import json
import socket
from pathlib import Path

import pytest
import yaml

from strategies.cli import main
from strategies.hill_climbing import HillClimbingTuner
from strategies.launch.config import DataFilesError, load_experiment_config
from strategies.launch.rest import ExperimentHandle, tuner_state
from strategies.methods import METHODS
from strategies.multi_trial import MultiTrialTuner
from strategies.multi_trial.job_files import ARTIFACT_DIR_ENV, ArtifactDirError, resolve_job_paths
from strategies.multi_trial.state import STATE_FILE, STATE_POINTER, locate_state_file
from strategies.settings import SettingsError
from strategies.trial import run_trial
from test_hill_climbing import SMALL, fake_trial
from tuner_driver import issue_all_with_ids

REPO = Path(__file__).resolve().parents[1]
MULTI_TRIAL = [name for name, method in METHODS.items()
               if method.tuner is not None and issubclass(method.tuner, MultiTrialTuner)]


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    """As NNI starts a tuner: NNI_CHECKPOINT_DIRECTORY is ~/nni-experiments/ID/checkpoint."""

    def start(experiment_id: str = "exp00001", **class_args) -> HillClimbingTuner:
        checkpoint = tmp_path / "nni-experiments" / experiment_id / "checkpoint"
        monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(checkpoint))
        return HillClimbingTuner(**{**SMALL, **class_args})

    (tmp_path / "shared").mkdir()
    return start


def climb_one_step(tuner: HillClimbingTuner) -> dict[str, dict]:
    """The start job done (its trial's files where its parameters say), then the first step's jobs."""
    (start_id, start), = issue_all_with_ids(tuner).values()
    tuner.receive_trial_result(start_id, start, fake_trial(start, 0.6))
    return {key: params for key, (_, params) in issue_all_with_ids(tuner, 10).items()}


@pytest.mark.parametrize("method", MULTI_TRIAL)
def test_every_multi_trial_method_takes_an_absolute_artifact_dir(method):
    parse = METHODS[method].parse_class_args
    assert parse({"artifact_dir": "/mnt/shared/resnas"}, "tuner.classArgs").artifact_dir == "/mnt/shared/resnas"
    assert parse({}, "tuner.classArgs").artifact_dir is None
    with pytest.raises(SettingsError, match="artifact_dir 'shared' is relative.*give the absolute path"):
        parse({"artifact_dir": "shared"}, "tuner.classArgs")


def test_the_search_lives_in_artifact_dir_per_experiment_and_its_paths_are_under_the_root(tmp_path, experiment):
    shared = tmp_path / "shared"
    tuner = experiment(artifact_dir=str(shared))
    step1 = climb_one_step(tuner)
    folder = shared / "exp00001"
    checkpoint = tmp_path / "nni-experiments" / "exp00001" / "checkpoint"
    assert tuner.state_path == folder / STATE_FILE and tuner.state_path.is_file()
    assert sorted(path.name for path in checkpoint.iterdir()) == [STATE_POINTER]  # no job folder, no state
    assert locate_state_file(checkpoint) == folder / STATE_FILE
    child = step1["step1/child0"]
    assert child["artifact_dir"] == str(shared) and child["out_dir"] == str(folder / "hill_climbing" / "step1" / "child0")
    assert child["parent"] == str(folder / "hill_climbing" / "start" / "model.ckpt")
    assert (folder / "hill_climbing" / "start" / "arch.json").is_file()  # where the start job's trial wrote it


def test_two_experiments_sharing_one_artifact_dir_keep_apart(tmp_path, experiment):
    shared = tmp_path / "shared"
    first = experiment("exp00001", artifact_dir=str(shared))
    second = experiment("exp00002", artifact_dir=str(shared))
    climb_one_step(first)
    assert second.state_dir == shared / "exp00002" and not (shared / "exp00002" / "hill_climbing").exists()
    assert json.loads(second.state_path.read_text())["jobs"]["start"]["status"] == "pending"
    assert json.loads(first.state_path.read_text())["jobs"]["start"]["status"] == "done"


def test_without_artifact_dir_the_search_stays_in_the_checkpoint_folder(tmp_path, experiment):
    tuner = experiment()
    step1 = climb_one_step(tuner)
    checkpoint = tmp_path / "nni-experiments" / "exp00001" / "checkpoint"
    assert tuner.state_path == checkpoint / STATE_FILE and not (checkpoint / STATE_POINTER).exists()
    assert step1["step1/parent"]["artifact_dir"] == str(checkpoint)
    assert step1["step1/parent"]["parent"] == str(checkpoint / "hill_climbing" / "start" / "model.ckpt")
    assert resolve_job_paths(step1["step1/parent"]) == step1["step1/parent"]


def test_a_state_file_from_before_artifact_dir_resumes_with_its_parameters_as_they_were(tmp_path, experiment):
    tuner = experiment()
    climb_one_step(tuner)
    saved = json.loads(tuner.state_path.read_text())
    for job in saved["jobs"].values():  # as an older resnas wrote it: absolute paths, no root
        job["params"].pop("artifact_dir")
    tuner.state_path.write_text(json.dumps(saved))
    resumed = experiment()
    again = {key: params for key, (_, params) in issue_all_with_ids(resumed, 100).items()}
    assert again == {key: saved["jobs"][key]["params"] for key in again} and "step1/child0" in again
    assert resolve_job_paths(again["step1/child0"]) == again["step1/child0"]


def test_a_worker_that_mounts_the_artifact_dir_elsewhere_swaps_the_root(tmp_path, monkeypatch):
    root, mount = tmp_path / "shared", tmp_path / "mnt" / "resnas"
    mount.mkdir(parents=True)
    own_file = str(tmp_path / "my_donor.ckpt")  # a user's file outside the root stays as it is
    params = {"method": "hill_climbing", "job": "final", "artifact_dir": str(root), "out_dir": f"{root}/E/h/final",
              "parent": f"{root}/E/h/step1/child0/model.ckpt", "ensemble": [f"{root}/E/h/start/model.ckpt"],
              "donor": own_file, "start": None}
    monkeypatch.setenv(ARTIFACT_DIR_ENV, str(mount))
    seen = resolve_job_paths(params)
    assert seen["artifact_dir"] == str(mount) and seen["out_dir"] == f"{mount}/E/h/final"
    assert seen["parent"] == f"{mount}/E/h/step1/child0/model.ckpt" and seen["ensemble"] == [f"{mount}/E/h/start/model.ckpt"]
    assert seen["donor"] == own_file and seen["start"] is None and params["out_dir"] == f"{root}/E/h/final"


def test_a_trial_that_cannot_see_the_artifact_dir_fails_in_one_sentence_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(ARTIFACT_DIR_ENV, raising=False)
    missing = tmp_path / "not-mounted"
    params = {"method": "hill_climbing", "job": "start", "artifact_dir": str(missing), "out_dir": f"{missing}/E/start"}
    with pytest.raises(ArtifactDirError) as raised:
        run_trial(params, tmp_path / "trial", None)
    assert str(raised.value) == (f"trial on {socket.gethostname()} cannot see the artifact directory {missing}; mount it "
                                 f"there at the same path, or set {ARTIFACT_DIR_ENV}.")
    assert not missing.exists()


def test_an_artifact_dir_the_manager_lacks_stops_the_tuner_and_the_launch_in_one_sentence(tmp_path, experiment):
    with pytest.raises(SettingsError, match="artifact_dir .*gone is not a folder on the manager's machine.*mount"):
        experiment(artifact_dir=str(tmp_path / "gone"))
    settings = yaml.safe_load((REPO / "nni_configs" / "hill_climbing_quick.yml").read_text())
    settings["trialCodeDirectory"] = settings["tuner"]["codeDirectory"] = str(REPO)
    settings["tuner"]["classArgs"]["artifact_dir"] = str(tmp_path / "gone")
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump(settings))
    assert load_experiment_config(config)["tuner"]["classArgs"]["artifact_dir"] == str(tmp_path / "gone")
    with pytest.raises(DataFilesError, match="gone is not a folder on this machine.*mount the shared filesystem"):
        load_experiment_config(config, check_data=True)


def test_plot_and_the_rest_side_find_the_state_file_through_the_pointer(tmp_path, experiment, capsys):
    climb_one_step(experiment(artifact_dir=str(tmp_path / "shared")))
    working_dir = tmp_path / "nni-experiments"
    handle = ExperimentHandle("exp00001", 1, "127.0.0.1", tmp_path / "c.yml", working_dir)
    assert tuner_state(handle)["jobs"]["start"]["status"] == "done"
    assert main(["plot", "exp00001", "--dir", str(working_dir)]) == 0
    assert (tmp_path / "shared" / "exp00001" / "hill_climbing" / "lineage.png").is_file()
