"""The ResBuilder tuner's decisions, its state file and resume, driven with made-up trial results."""

import json
from pathlib import Path

import pytest
import yaml

from strategies.layer_pruning.tuner import LayerPruningTuner, parse_layer_pruning_args, step_edit
from strategies.multi_trial.state import STATE_FILE
from strategies.settings import SettingsError
from tuner_driver import fail, issue_all

REPO = Path(__file__).resolve().parents[1]
QUICK = yaml.safe_load((REPO / "nni_configs" / "layer_pruning_quick.yml").read_text())["tuner"]["classArgs"]


def fake_result(params, val_accuracy=0.5, flops=1e5):
    return {"default": val_accuracy, "val_accuracy": val_accuracy, "flops": flops, "variant": params["kind"],
            "step": params.get("step"), "depth": 3, "widest_first_stage": 16}


def test_paper_defaults_and_typos():
    settings = parse_layer_pruning_args(
        yaml.safe_load((REPO / "nni_configs" / "layer_pruning.yml").read_text())["tuner"]["classArgs"])
    assert (settings.n_insertions, settings.n_morphnet, settings.zeta) == (4, 7, 1e8)
    assert (settings.lambda_morphnet, settings.lambda_lasso, settings.tau_lasso, settings.weight_decay) == (
        1e-7, 1e-8, 1e-3, 1e-5)
    with pytest.raises(SettingsError, match="did you mean 'zeta'"):
        parse_layer_pruning_args({"zetta": 1e8})
    with pytest.raises(SettingsError, match="rb0, rb_r18"):
        parse_layer_pruning_args({"start": "resnet"})


def test_routine_is_n_insertions_then_one_morphnet_step():
    assert [step_edit(t, 2) for t in range(7)] == ["none", "insert", "insert", "morphnet", "insert", "insert", "morphnet"]
    assert [step_edit(t, 0) for t in range(3)] == ["none", "morphnet", "morphnet"]


def run_search(tuner, flops_of=lambda params: 1e5, accuracy_of=lambda params: 0.5):
    """Answer every issued job until the tuner finishes; returns the keys in issue order."""
    order, parameter_id = [], 0
    while not tuner.state["finished"]:
        issued = issue_all(tuner, parameter_id)
        assert issued, "the tuner stalled: nothing running and nothing to issue"
        parameter_id += len(issued)
        for key, params in issued.items():
            order.append(key)
            tuner.receive_trial_result(0, params, fake_result(params, accuracy_of(params), flops_of(params)))
    return order


def test_with_reg_decides_the_next_step_and_no_reg_variants_run_beside_it(tmp_path):
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    first = issue_all(tuner)
    assert list(first) == ["step0/with_reg"] and first["step0/with_reg"]["parent"] is None
    tuner.receive_trial_result(0, first["step0/with_reg"], fake_result(first["step0/with_reg"]))
    second = issue_all(tuner, 1)
    assert set(second) == {"step0/no_reg_ri", "step0/no_reg_wi", "step1/with_reg"}
    assert second["step1/with_reg"]["edit"] == "insert"
    assert second["step1/with_reg"]["parent"].endswith("step0/with_reg/model.ckpt")
    assert second["step0/no_reg_wi"]["source"] == second["step1/with_reg"]["parent"]


def test_final_takes_the_best_no_reg_net_within_the_budget(tmp_path):
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    zeta = QUICK["zeta"]
    # Bigger steps are more accurate but over budget until the last MorphNet step.
    order = run_search(
        tuner,
        flops_of=lambda p: zeta * (2 if p.get("step", 0) in (4, 5) else 0.5),
        accuracy_of=lambda p: 0.5 + 0.01 * p.get("step", 0) + (0.001 if p["kind"] == "no_reg_wi" else 0),
    )
    assert order[-1] == "final" and len(order) == 7 * 3 + 1  # steps 0..6, three variants each, one final
    assert tuner.state["best"] == "step6/no_reg_wi"
    final_params = tuner.jobs["final"]["params"]
    assert final_params["source"].endswith("step6/no_reg_wi/model.ckpt")
    tuner2 = LayerPruningTuner(state_dir=str(tmp_path / "other"), **QUICK)
    run_search(tuner2, flops_of=lambda p: zeta * (0.5 if p.get("step") == 2 else 2), accuracy_of=lambda p: 0.9)
    assert tuner2.state["best"].startswith("step2/")  # the only steps within budget
    assert tuner.state["finished"] and tuner.state["error"] is None
    assert tuner.state["summary"]["default"] == 0.5  # the final job's own result is the search's result
    assert (tmp_path / "layer_pruning" / "fig5.png").is_file()


def test_a_failed_with_reg_step_ends_the_pipeline_but_keeps_what_was_found(tmp_path):
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    step0 = issue_all(tuner)["step0/with_reg"]
    tuner.receive_trial_result(0, step0, fake_result(step0))
    issued = issue_all(tuner, 1)
    ids = {key: 1 + index for index, key in enumerate(issued)}
    fail(tuner, ids["step1/with_reg"], issued["step1/with_reg"])
    for key in ("step0/no_reg_ri", "step0/no_reg_wi"):
        tuner.receive_trial_result(ids[key], issued[key], fake_result(issued[key]))
    assert list(issue_all(tuner, 10)) == ["final"]
    assert tuner.state["stopped_at"] == 1


def test_resume_continues_from_the_state_file_and_retrains_nothing_finished(tmp_path):
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    step0 = issue_all(tuner)["step0/with_reg"]
    tuner.receive_trial_result(0, step0, fake_result(step0))
    running = issue_all(tuner, 1)
    tuner.receive_trial_result(1, running["step0/no_reg_ri"], fake_result(running["step0/no_reg_ri"]))
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["jobs"]["step0/no_reg_ri"]["status"] == "done"

    # The manager dies; `nnictl resume` starts a new tuner and hands back the finished trials.
    resumed = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    resumed.import_data([{"parameter": running["step0/no_reg_ri"], "value": json.dumps(fake_result(step0))}])
    reissued = issue_all(resumed, 100)
    assert set(reissued) == {"step0/no_reg_wi", "step1/with_reg"}  # unfinished ones only
    assert reissued["step1/with_reg"] == running["step1/with_reg"]  # the same job, the same parameters


def test_other_settings_start_a_new_search_instead_of_resuming(tmp_path):
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    step0 = issue_all(tuner)["step0/with_reg"]
    tuner.receive_trial_result(0, step0, fake_result(step0))
    finished = Path(step0["out_dir"])
    finished.mkdir(parents=True)
    (finished / "result.json").write_text(json.dumps(fake_result(step0)))
    changed = LayerPruningTuner(state_dir=str(tmp_path), **{**QUICK, "zeta": 1e6})
    assert list(issue_all(changed)) == ["step0/with_reg"]
    # the earlier search is kept, and its finished job cannot stand in for the new search's job of that name
    assert not finished.exists()
    kept = tmp_path / "layer_pruning.previous-1"
    assert (kept / "layer_pruning" / "step0" / "with_reg" / "result.json").is_file()
    assert json.loads((kept / STATE_FILE).read_text())["settings"]["zeta"] == QUICK.get("zeta", 1e8)


def test_morphnet_only_ablation_has_no_insertion_steps(tmp_path):
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **{**QUICK, "morphnet_only": True})
    order = run_search(tuner)
    edits = [tuner.jobs[key]["params"]["edit"] for key in order if key.endswith("with_reg")]
    assert edits == ["none", "morphnet", "morphnet"]


def test_a_result_whose_parameters_nni_blanked_still_counts(tmp_path):
    # NNI 3.0 replaces a trial's stored parameters with '' when a request asked for more trials than were issued.
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    step0 = issue_all(tuner)["step0/with_reg"]
    tuner.receive_trial_result(0, "", fake_result(step0))
    assert tuner.jobs["step0/with_reg"]["status"] == "done"


def test_trial_slots_nni_offered_while_the_tuner_waited_are_used_when_jobs_become_ready(tmp_path):
    # NNI requests as many trials as just ended and does not repeat a request the tuner could not fill.
    sent = []
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **QUICK)
    first = tuner.generate_multiple_parameters([0, 1, 2], st_callback=lambda pid, params: sent.append((pid, params)))
    assert [params["job"] for params in first] == ["step0/with_reg"]
    tuner.receive_trial_result(0, first[0], fake_result(first[0]))
    # Three jobs became ready; two slots were on credit, so two start now and one waits for a trial to end.
    assert [(pid, params["job"]) for pid, params in sent] == [(1, "step1/with_reg"), (2, "step0/no_reg_ri")]
    assert [params["job"] for params in tuner.generate_multiple_parameters([3])] == ["step0/no_reg_wi"]


# ---- paper fidelity of the trial's data and optimiser ----------------------------------------------------------
def test_the_paper_configs_say_their_augmentation_and_emnist_is_the_papers_62_class_split(monkeypatch, tmp_path):
    from trainers.datasets import dataset_entry, dataset_info

    paper = parse_layer_pruning_args(
        yaml.safe_load((REPO / "nni_configs" / "layer_pruning.yml").read_text())["tuner"]["classArgs"])
    assert (paper.dataset, paper.augment) == ("cifar10", "shift") and QUICK["augment"] == "shift"
    assert dataset_info("cifar10").flip and not dataset_info("emnist_byclass").flip  # flips only where labels allow
    assert parse_layer_pruning_args({"dataset": "emnist_byclass"}).dataset == "emnist_byclass"
    assert (dataset_info("emnist_byclass").num_classes, dataset_info("emnist").num_classes) == (62, 47)

    import torch
    import torchvision

    splits = []

    class FakeEmnist:  # records the split torchvision is asked for; no files needed
        def __init__(self, root, train, download, split):
            splits.append(split)
            self.data, self.targets = torch.zeros(2, 28, 28, dtype=torch.uint8), [0, 61]

    monkeypatch.setattr(torchvision.datasets, "EMNIST", FakeEmnist)
    info = dataset_info("emnist_byclass")
    images, labels = dataset_entry("emnist_byclass").read(info, tmp_path, True, False)
    assert splits == ["byclass"] and images.shape == (2, 1, 28, 28) and labels.tolist() == [0, 61]


@pytest.mark.parametrize("kind", ["with_reg", "no_reg_ri"])
def test_the_trials_l2_decays_kernels_only(kind, monkeypatch, tmp_path):
    """lambda_0 is the paper's Keras kernel regulariser: every layer-pruning training decays conv and dense
    kernels only, never the BN scales the MorphNet term reads."""
    from types import SimpleNamespace

    from strategies.layer_pruning import trial
    from strategies.reporting import PrintReporter

    seen = []

    def fake_train(model, datamodule, settings, optim, epochs, reporter, **kwargs):
        seen.append(optim)
        return SimpleNamespace(final_val_accuracy=0.5)

    monkeypatch.setattr(trial, "train", fake_train)
    settings = {**QUICK, "image_size": 8, "start_width": 4}
    parent = tmp_path / "parent"
    trial.run_layer_pruning_trial({"kind": "with_reg", "step": 0, "epochs": 1, "parent": None, "edit": "none",
                                   "settings": settings, "out_dir": str(parent)}, parent, PrintReporter())
    if kind != "with_reg":
        child = tmp_path / "child"
        trial.run_layer_pruning_trial({"kind": kind, "step": 0, "epochs": 1, "source": str(parent / "model.ckpt"),
                                       "settings": settings, "out_dir": str(child)}, child, PrintReporter())
    assert [(optim.weight_decay_on, optim.weight_decay) for optim in seen] == [("kernels", 1e-5)] * len(seen)
