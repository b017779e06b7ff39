"""The NASH tuner's decisions (made-up results), its resume, and one real tiny search run in-process."""

import json
from pathlib import Path

import nni
import pytest
import torch
import yaml

from search_spaces import ArchSpec
from search_spaces.edits.morphism_ops import Morphism, apply_to_spec
from strategies.hill_climbing import HillClimbingTuner, parse_hill_climbing_args
from strategies.hill_climbing.tuner import random_walk_choice
from strategies.local_search import search_locally
from strategies.settings import SettingsError
from tuner_driver import fail, issue_all_with_ids as issue_all, nash_job_spec

REPO = Path(__file__).resolve().parents[1]
SMALL = {"dataset": "digits", "start_widths": [4, 8, 8], "n_steps": 2, "n_neighbours": 3, "n_morphisms": 2}


def fake_trial(params, val_accuracy):
    """What a trial leaves behind for the tuner: arch.json of the net it trained, and its result."""
    nash_job_spec(params)
    return {"default": val_accuracy, "val_accuracy": val_accuracy, "params": 100, "flops": 1000}


def test_paper_defaults_and_typos():
    settings = parse_hill_climbing_args(
        yaml.safe_load((REPO / "nni_configs" / "hill_climbing.yml").read_text())["tuner"]["classArgs"])
    assert (settings.n_neighbours, settings.n_morphisms, settings.epochs_neighbour, settings.epochs_final) == (8, 5, 17, 20)
    assert (settings.lr_start, settings.lr_end, settings.pretrain_epochs) == (0.05, 0.0, 20)
    assert (settings.mode, settings.neighbour_schedule) == ("hill_climbing", "sgdr")
    assert settings.final_on_train_and_val and settings.ensemble_last == settings.n_steps
    assert settings.morphisms == ("deepen_conv", "deepen_residual", "widen", "add_skip")
    with pytest.raises(SettingsError, match="did you mean 'n_steps'"):
        parse_hill_climbing_args({"n_step": 3})
    with pytest.raises(SettingsError, match="unknown morphism 'deeper'.*widen, add_skip, enlarge_kernel"):
        parse_hill_climbing_args({"morphisms": ["deeper"]})
    assert parse_hill_climbing_args({"morphisms": ["widen", "enlarge_kernel"]}).morphisms == ("widen", "enlarge_kernel")


def test_settings_of_the_ablations_name_the_fix():
    with pytest.raises(SettingsError, match="hill_climbing needs at least 2.*set mode: random_walk"):
        parse_hill_climbing_args({"n_neighbours": 1})
    assert parse_hill_climbing_args({"n_neighbours": 1, "mode": "random_walk"}).n_neighbours == 1
    with pytest.raises(SettingsError, match="mode='walk' is not a valid one of 'hill_climbing', 'random_walk'"):
        parse_hill_climbing_args({"mode": "walk"})
    with pytest.raises(SettingsError, match="'sgdr', 'constant'"):
        parse_hill_climbing_args({"neighbour_schedule": "cosine"})
    with pytest.raises(SettingsError, match="ensemble_last must be between 0 and n_steps"):
        parse_hill_climbing_args({"n_steps": 2, "ensemble_last": 3})


def test_constant_neighbour_schedule_keeps_lr_start_and_cosine_stays_for_start_and_final():
    from strategies.hill_climbing.trial import job_optim
    from trainers.system import make_scheduler

    constant = parse_hill_climbing_args({"neighbour_schedule": "constant", "lr_start": 0.07})
    for kind in ("child", "parent"):
        optim = job_optim(constant, kind)
        assert (optim.schedule, optim.lr) == ("none", 0.07)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=optim.lr)
        assert make_scheduler(optimizer, optim, 17) is None  # no scheduler: the rate stays lr_start
    for kind in ("start", "final"):
        assert job_optim(constant, kind).schedule == "cosine"
    assert job_optim(parse_hill_climbing_args({}), "child").schedule == "cosine"


def report(tuner, issued, accuracies):
    """Made-up results for the issued jobs: a float finishes the job, None fails its trial."""
    for key, accuracy in accuracies.items():
        parameter_id, params = issued[key]
        if accuracy is None:
            fail(tuner, parameter_id, params)
        else:
            tuner.receive_trial_result(parameter_id, params, fake_trial(params, accuracy))


def started(tmp_path, start_accuracy=0.60, **settings):
    tuner = HillClimbingTuner(state_dir=str(tmp_path), **{**SMALL, **settings})
    (start_id, start), = issue_all(tuner).values()
    tuner.receive_trial_result(start_id, start, fake_trial(start, start_accuracy))
    return tuner


def test_a_step_is_n_neighbours_jobs_children_and_the_retrained_parent(tmp_path):
    tuner = started(tmp_path)
    step1 = issue_all(tuner, 10)
    assert sorted(step1) == ["step1/child0", "step1/child1", "step1/parent"]  # n_neighbours = 3 jobs
    for key, (_, params) in step1.items():
        assert params["parent"].endswith("start/model.ckpt") and params["parent_job"] == "start"
        assert params["epochs"] == 17  # epochs_neighbour, the parent's too
    assert step1["step1/parent"][1]["kind"] == "parent" and step1["step1/parent"][1]["morphisms"] == []
    assert all(len(step1[key][1]["morphisms"]) == 2 for key in ("step1/child0", "step1/child1"))
    paper = started(tmp_path / "paper", n_neighbours=8)  # the paper's n_neigh = 8: 7 children + the parent
    assert sorted(issue_all(paper, 10)) == [f"step1/child{i}" for i in range(7)] + ["step1/parent"]


def test_the_lineage_plot_reads_new_and_old_state_files(tmp_path):
    from strategies.hill_climbing.plot import plot_lineage, step_kept_its_parent

    candidate = {"status": "done", "val_accuracy": 0.5, "params": 10}
    old = {"step": 1, "winner": "start", "val_accuracy": 0.6, "params": 10,  # before step{k}/parent existed
           "candidates": [{"job": "start", **candidate}, {"job": "step1/child0", **candidate}]}
    new = {"step": 2, "winner": "step2/parent", "kept": True, "morphisms": [], "val_accuracy": 0.7, "params": 10,
           "candidates": [{"job": "step2/child0", **candidate},
                          {"job": "step2/parent", "retrained_parent": True, **candidate}]}
    assert step_kept_its_parent(old) and step_kept_its_parent(new)
    assert not step_kept_its_parent({**new, "kept": False})
    start = {"step": 0, "winner": "start", "val_accuracy": 0.5, "params": 10, "candidates": []}
    assert plot_lineage({"lineage": [start, old, new]}, tmp_path / "lineage.png").is_file()


def test_the_parent_competes_with_its_new_accuracy_not_its_old_one(tmp_path):
    tuner = started(tmp_path, start_accuracy=0.90)  # the old accuracy would beat every child
    step1 = issue_all(tuner, 10)
    report(tuner, step1, {"step1/child0": 0.55, "step1/child1": 0.70, "step1/parent": 0.50})
    step2 = issue_all(tuner, 20)
    assert all(params["parent"].endswith("step1/child1/model.ckpt") for _, params in step2.values())
    assert sorted(step2) == ["step2/child0", "step2/child1", "step2/parent"]

    # The retrained parent wins a tie; its NEW accuracy (0.75, above the old 0.70) is what the lineage records,
    # and the next net starts from its retrained checkpoint.
    report(tuner, step2, {"step2/child0": 0.50, "step2/child1": 0.75, "step2/parent": 0.75})
    (final_id, final), = issue_all(tuner, 30).values()
    assert final["kind"] == "final" and final["parent"].endswith("step2/parent/model.ckpt")
    assert final["start"].endswith("start/model.ckpt") and final["ensemble"] == []

    lineage = tuner.state["lineage"]
    assert [entry["winner"] for entry in lineage] == ["start", "step1/child1", "step2/parent"]
    assert [entry["val_accuracy"] for entry in lineage] == [0.90, 0.70, 0.75]
    assert [entry["kept"] for entry in lineage[1:]] == [False, True] and lineage[2]["morphisms"] == []
    assert [entry["parent"] for entry in lineage[1:]] == ["start", "step1/child1"]
    parent_entry, = [c for c in lineage[2]["candidates"] if c["retrained_parent"]]
    assert parent_entry == {"job": "step2/parent", "status": "done", "val_accuracy": 0.75, "params": 100,
                            "retrained_parent": True}
    assert (tmp_path / "hill_climbing" / "lineage.png").is_file()

    tuner.receive_trial_result(final_id, final, {"default": 0.8, "start_default": 0.6})
    assert tuner.state["finished"] and tuner.state["summary"] == {"default": 0.8, "start_default": 0.6}
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(99)


def test_a_failed_parent_job_falls_back_to_the_parents_previous_result(tmp_path, caplog):
    tuner = started(tmp_path, start_accuracy=0.60)
    step1 = issue_all(tuner, 10)
    report(tuner, step1, {"step1/child0": 0.55, "step1/child1": None, "step1/parent": None})
    assert "retraining the parent start failed" in caplog.text
    step2 = issue_all(tuner, 20)  # 0.55 < the old 0.60: the search stays at the start net's checkpoint
    assert all(params["parent"].endswith("start/model.ckpt") for _, params in step2.values())
    entry = tuner.state["lineage"][1]
    assert (entry["winner"], entry["kept"], entry["val_accuracy"]) == ("start", True, 0.60)
    assert {c["job"]: c["status"] for c in entry["candidates"]} == {
        "step1/child0": "done", "step1/child1": "failed", "step1/parent": "failed"}
    report(tuner, step2, {"step2/child0": 0.65, "step2/child1": 0.61, "step2/parent": None})
    assert tuner.state["best"] == "step2/child0"  # a child still beats the old result


def test_random_walk_always_moves_to_a_random_child(tmp_path):
    tuner = started(tmp_path, start_accuracy=0.90, mode="random_walk")
    winners = []
    for step in (1, 2):
        jobs = issue_all(tuner, 10 * step)
        assert sorted(jobs) == [f"step{step}/child{i}" for i in range(3)]  # n_neighbours children, no parent
        report(tuner, jobs, {key: 0.1 + 0.1 * index for index, key in enumerate(sorted(jobs))})
        winners.append(tuner.state["best"])
    assert all(winner.split("/")[1].startswith("child") for winner in winners)
    assert not any(entry["kept"] for entry in tuner.state["lineage"][1:])
    # Seeded per step: a second search with the same seed walks the same way; the choice ignores accuracy.
    again = started(tmp_path / "again", start_accuracy=0.90, mode="random_walk")
    for step in (1, 2):
        jobs = issue_all(again, 10 * step)
        report(again, jobs, {key: 0.1 + 0.1 * index for index, key in enumerate(sorted(jobs))})
    assert [entry["winner"] for entry in again.state["lineage"][1:]] == winners


def test_random_walk_picks_uniformly_and_stays_only_when_every_child_failed(tmp_path):
    tuner = started(tmp_path, mode="random_walk")
    jobs = issue_all(tuner, 10)
    report(tuner, jobs, {"step1/child0": 0.9, "step1/child1": 0.1, "step1/child2": 0.5})
    assert tuner.state["best"] == random_walk_choice(0, 1, sorted(jobs))  # not the best child by accuracy
    children = sorted(jobs)
    counts = {key: 0 for key in children}
    for seed in range(300):  # the choice under many seeds: each child about a third of the time
        counts[random_walk_choice(seed, 1, children)] += 1
    assert all(70 <= count <= 130 for count in counts.values()), counts
    failed = started(tmp_path / "failed", mode="random_walk")
    jobs = issue_all(failed, 10)
    report(failed, jobs, {key: None for key in jobs})
    assert failed.state["best"] == "start" and failed.state["lineage"][1]["kept"]


def test_the_final_job_gets_the_last_winners_for_the_ensemble(tmp_path):
    tuner = started(tmp_path, ensemble_last=2, n_steps=3, final_on_train_and_val=True)
    outcomes = [{"child0": 0.70, "child1": 0.60, "parent": 0.65},  # moves to child0
                {"child0": 0.60, "child1": 0.60, "parent": 0.72},  # keeps it (retrained)
                {"child0": 0.80, "child1": 0.60, "parent": 0.75}]  # moves to child0
    for step, outcome in enumerate(outcomes, start=1):
        report(tuner, issue_all(tuner, 10 * step), {f"step{step}/{job}": acc for job, acc in outcome.items()})
    (_, final), = issue_all(tuner, 99).values()
    assert final["ensemble_jobs"] == ["step2/parent", "step3/child0"]
    assert [Path(path).parent.relative_to(tmp_path / "hill_climbing").as_posix() for path in final["ensemble"]] == \
        final["ensemble_jobs"]
    assert final["parent_job"] == "step3/child0" and final["settings"]["final_on_train_and_val"] is True
    json.dumps(final)  # trial parameters stay JSON


def test_resume_draws_the_same_children_and_reissues_only_unfinished_ones(tmp_path):
    tuner = started(tmp_path)
    step1 = issue_all(tuner, 10)
    done_id, done = step1["step1/child0"]
    tuner.receive_trial_result(done_id, done, fake_trial(done, 0.7))

    resumed = HillClimbingTuner(state_dir=str(tmp_path), **SMALL)
    resumed.import_data([{"parameter": done, "value": 0.7}])  # NNI hands back the finished trial
    again = issue_all(resumed, 100)
    assert sorted(again) == ["step1/child1", "step1/parent"]
    assert again["step1/child1"][1] == step1["step1/child1"][1]


def test_a_tiny_search_runs_in_process_and_climbs(tmp_path):
    torch.set_num_threads(1)
    summary = search_locally(
        "hill_climbing", tmp_path, dataset="digits", image_size=12, augment="none", start_widths=[4, 8, 8],
        pretrain_epochs=2, n_steps=2, n_neighbours=2, n_morphisms=2, epochs_neighbour=1, epochs_final=1,
        batch_size=64, num_workers=0, limit_train_batches=6, seed=1, final_on_train_and_val=True, ensemble_last=2,
    )
    state = json.loads((tmp_path / "resnas_state.json").read_text())
    lineage = state["lineage"]
    for entry in lineage[1:]:  # each step moves to its best neighbour by the new validation accuracies
        finished = [c["val_accuracy"] for c in entry["candidates"] if c["val_accuracy"] is not None]
        assert entry["val_accuracy"] == max(finished)
        assert sorted(c["job"].split("/")[1] for c in entry["candidates"]) == ["child0", "parent"]
    assert summary["start_default"] is not None and 0.0 <= summary["default"] <= 1.0
    # Trained on train + val: the final val accuracy is named as not held out; the ensemble is tested too.
    assert "val_accuracy" not in summary and 0.0 <= summary["train_val_accuracy"] <= 1.0
    assert summary["ensemble_jobs"] == list(dict.fromkeys(entry["winner"] for entry in lineage[1:]))
    assert 0.0 <= summary["ensemble_test_accuracy"] <= 1.0 and summary["ensemble_params"] >= summary["start_params"]
    assert summary["params"] >= summary["start_params"]
    assert (Path(summary["export_dir"]) / "model.safetensors").is_file()
    assert (tmp_path / "hill_climbing" / "lineage.png").is_file()
    # Children are real: each trained net's spec is its parent's spec with the morphisms applied.
    child = state["jobs"]["step1/child0"]
    spec = ArchSpec.from_json((tmp_path / "hill_climbing" / "start" / "arch.json").read_text())
    for morphism in child["params"]["morphisms"]:
        spec = apply_to_spec(spec, Morphism.from_dict(morphism))
    assert ArchSpec.from_json((tmp_path / "hill_climbing" / "step1" / "child0" / "arch.json").read_text()) == spec


def test_train_and_val_data_trains_on_both_splits_augmented_and_leaves_test_alone():
    from strategies.data import make_job_datamodule
    from strategies.hill_climbing.final import TrainAndValData
    from trainers import build_transform

    settings = parse_hill_climbing_args({"dataset": "digits", "image_size": 12, "augment": "shift", "num_workers": 0})
    datamodule = make_job_datamodule(settings)
    union = TrainAndValData(datamodule)
    train_part, val_part = union.train_set.datasets
    assert len(union.train_set) == len(datamodule.train_set) + len(datamodule.val_set)
    assert val_part.indices == datamodule.val_set.indices  # the same validation images ...
    augmented = build_transform(datamodule.info, 12, "shift", train=True)
    assert repr(val_part.dataset.transform) == repr(augmented)  # ... seen through the training transform
    assert repr(datamodule.val_set.dataset.transform) != repr(augmented)  # the data module's own is untouched
    assert union.test_dataloader().dataset is datamodule.test_set
    assert sum(len(labels) for _, labels in union.train_dataloader()) == len(union.train_set)


def test_the_ensemble_is_the_mean_of_the_members_softmax(tmp_path):
    from strategies.hill_climbing.final import ensemble_test_accuracy

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits)

        def forward(self, images):
            return self.logits[: len(images)]

    class Batches:
        def test_dataloader(self):
            return [(torch.zeros(2, 1), torch.tensor([0, 1]))]

    # Member a is confidently right on image 0 and slightly wrong on 1; b the other way round, less sure.
    a, b = Fixed([[4.0, 0.0], [0.2, 0.0]]), Fixed([[0.0, 0.5], [0.0, 3.0]])
    assert ensemble_test_accuracy([a], Batches()) == 0.5 and ensemble_test_accuracy([b], Batches()) == 0.5
    assert ensemble_test_accuracy([a, b], Batches()) == 1.0


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
