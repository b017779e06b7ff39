"""The NASH tuner's decisions (made-up results), its resume, and one real tiny search run in-process."""

import json
from pathlib import Path

import nni
import pytest
import torch
import yaml

from search_spaces import ArchSpec, nash_start_spec
from search_spaces.edits.morphism_ops import Morphism, apply_to_spec
from strategies.hill_climbing import HillClimbingTuner, parse_hill_climbing_args
from strategies.multi_trial import search_locally
from strategies.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]
SMALL = {"dataset": "digits", "start_widths": [4, 8, 8], "n_steps": 2, "n_neighbours": 3, "n_morphisms": 2}


def issue_all(tuner, first_id=0):
    issued, parameter_id = {}, first_id
    while True:
        try:
            params = tuner.generate_parameters(parameter_id)
        except nni.NoMoreTrialError:
            return issued
        issued[params["job"]] = (parameter_id, params)
        parameter_id += 1


def fake_trial(params, val_accuracy):
    """What a trial leaves behind for the tuner: arch.json of the net it trained, and its result."""
    if params["kind"] == "start":
        spec = nash_start_spec(10, (4, 8, 8), in_channels=1)
    else:
        spec = ArchSpec.from_json((Path(params["parent"]).parent / "arch.json").read_text())
        for morphism in params.get("morphisms", []):
            spec = apply_to_spec(spec, Morphism.from_dict(morphism))
    out_dir = Path(params["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "arch.json").write_text(spec.to_json())
    return {"default": val_accuracy, "val_accuracy": val_accuracy, "params": 100, "flops": 1000}


def test_paper_defaults_and_typos():
    settings = parse_hill_climbing_args(
        yaml.safe_load((REPO / "nni_configs" / "hill_climbing.yml").read_text())["tuner"]["classArgs"])
    assert (settings.n_neighbours, settings.n_morphisms, settings.epochs_neighbour, settings.epochs_final) == (8, 5, 17, 20)
    assert (settings.lr_start, settings.lr_end, settings.pretrain_epochs) == (0.05, 0.0, 20)
    with pytest.raises(SettingsError, match="did you mean 'n_steps'"):
        parse_hill_climbing_args({"n_step": 3})
    with pytest.raises(SettingsError, match="unknown morphism 'deeper'"):
        parse_hill_climbing_args({"morphisms": ["deeper"]})


def test_a_step_makes_children_of_the_best_and_never_goes_down(tmp_path):
    tuner = HillClimbingTuner(state_dir=str(tmp_path), **SMALL)
    (start_id, start), = issue_all(tuner).values()
    tuner.receive_trial_result(start_id, start, fake_trial(start, 0.60))

    step1 = issue_all(tuner, 10)
    assert sorted(step1) == ["step1/child0", "step1/child1", "step1/child2"]
    for parameter_id, params in step1.values():
        assert params["parent"].endswith("start/model.ckpt") and len(params["morphisms"]) == 2
    accuracies = {"step1/child0": 0.55, "step1/child1": 0.70, "step1/child2": 0.65}
    for key, (parameter_id, params) in step1.items():
        tuner.receive_trial_result(parameter_id, params, fake_trial(params, accuracies[key]))
    step2 = issue_all(tuner, 20)
    assert all(params["parent"].endswith("step1/child1/model.ckpt") for _, params in step2.values())

    # Every child of step 2 is worse or fails: the best stays step1/child1 (the parent is a candidate).
    (id0, child0), (id1, child1), (id2, child2) = step2.values()
    tuner.receive_trial_result(id0, child0, fake_trial(child0, 0.50))
    tuner.trial_end(id1, success=False)
    tuner.receive_trial_result(id2, child2, fake_trial(child2, 0.70))  # a tie keeps the parent
    (final_id, final), = issue_all(tuner, 30).values()
    assert final["kind"] == "final" and final["parent"].endswith("step1/child1/model.ckpt")
    assert final["start"].endswith("start/model.ckpt")

    lineage = tuner.state["lineage"]
    assert [entry["winner"] for entry in lineage] == ["start", "step1/child1", "step1/child1"]
    assert [entry["val_accuracy"] for entry in lineage] == [0.60, 0.70, 0.70]
    assert {c["job"]: c["status"] for c in lineage[2]["candidates"]}["step2/child1"] == "failed"
    assert (tmp_path / "hill_climbing" / "lineage.png").is_file()

    tuner.receive_trial_result(final_id, final, {"default": 0.8, "start_default": 0.6})
    assert tuner.state["finished"] and tuner.state["summary"] == {"default": 0.8, "start_default": 0.6}
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(99)


def test_resume_draws_the_same_children_and_reissues_only_unfinished_ones(tmp_path):
    tuner = HillClimbingTuner(state_dir=str(tmp_path), **SMALL)
    (start_id, start), = issue_all(tuner).values()
    tuner.receive_trial_result(start_id, start, fake_trial(start, 0.6))
    step1 = issue_all(tuner, 10)
    done_id, done = step1["step1/child0"]
    tuner.receive_trial_result(done_id, done, fake_trial(done, 0.7))

    resumed = HillClimbingTuner(state_dir=str(tmp_path), **SMALL)
    resumed.import_data([{"parameter": done, "value": 0.7}])  # NNI hands back the finished trial
    again = issue_all(resumed, 100)
    assert sorted(again) == ["step1/child1", "step1/child2"]
    assert again["step1/child1"][1] == step1["step1/child1"][1]


def test_a_tiny_search_runs_in_process_and_climbs(tmp_path):
    torch.set_num_threads(1)
    summary = search_locally(
        "hill_climbing", tmp_path, dataset="digits", image_size=12, augment="none", start_widths=[4, 8, 8],
        pretrain_epochs=2, n_steps=2, n_neighbours=2, n_morphisms=2, epochs_neighbour=1, epochs_final=1,
        batch_size=64, num_workers=0, limit_train_batches=6, seed=1,
    )
    state = json.loads((tmp_path / "resnas_state.json").read_text())
    lineage = state["lineage"]
    accuracies = [entry["val_accuracy"] for entry in lineage]
    assert accuracies == sorted(accuracies)  # hill climbing never moves down
    assert summary["start_default"] is not None and 0.0 <= summary["default"] <= 1.0
    assert summary["val_accuracy"] >= 0 and summary["params"] >= summary["start_params"]
    assert (Path(summary["export_dir"]) / "model.safetensors").is_file()
    assert (tmp_path / "hill_climbing" / "lineage.png").is_file()
    # Children are real: each trained net's spec is its parent's spec with the morphisms applied.
    child = state["jobs"]["step1/child0"]
    spec = ArchSpec.from_json((tmp_path / "hill_climbing" / "start" / "arch.json").read_text())
    for morphism in child["params"]["morphisms"]:
        spec = apply_to_spec(spec, Morphism.from_dict(morphism))
    assert ArchSpec.from_json((tmp_path / "hill_climbing" / "step1" / "child0" / "arch.json").read_text()) == spec


def test_a_reissued_job_that_had_finished_reports_its_result_and_trains_nothing(tmp_path):
    from strategies.reporting import PrintReporter
    from strategies.trial import run_trial

    out_dir = tmp_path / "step1" / "child0"
    out_dir.mkdir(parents=True)
    (out_dir / "result.json").write_text(json.dumps({"default": 0.7, "val_accuracy": 0.7}))
    reporter = PrintReporter()
    params = {"method": "hill_climbing", "job": "step1/child0", "out_dir": str(out_dir), "kind": "child",
              "parent": str(tmp_path / "missing.ckpt"), "epochs": 3, "settings": {"dataset": "digits"}}
    assert run_trial(params, out_dir, reporter) == {"default": 0.7, "val_accuracy": 0.7}
    assert reporter.result == {"default": 0.7, "val_accuracy": 0.7} and not (out_dir / "model.ckpt").exists()


def test_a_corrupt_parent_checkpoint_fails_the_child_with_one_sentence(tmp_path):
    from strategies.reporting import PrintReporter
    from strategies.trial import run_trial
    from trainers import CheckpointError

    parent = tmp_path / "model.ckpt"
    parent.write_bytes(b"not a checkpoint")
    params = {"method": "hill_climbing", "job": "step1/child0", "out_dir": str(tmp_path / "child"), "kind": "child",
              "parent": str(parent), "epochs": 1, "settings": {"dataset": "digits", "num_workers": 0}}
    with pytest.raises(CheckpointError, match="not a readable resnas checkpoint.*delete it and rerun"):
        run_trial(params, tmp_path / "child", PrintReporter())
