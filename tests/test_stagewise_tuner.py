"""The stage-wise tuner's decisions, its state file and resume, driven with made-up trial results; the
Table III nets as built here; the settings' refusals."""

import json
from pathlib import Path

import pytest
import yaml

from search_spaces.cost import measure_cost
from search_spaces.spec import SpecError, cifar_resnet_spec
from strategies.multi_trial.state import STATE_FILE
from strategies.settings import SettingsError
from strategies.stagewise.donor import EXPORT_SPEC_FILE, EXPORT_WEIGHTS_FILE, donor_spec, transferred_weights
from strategies.stagewise.settings import parse_stagewise_args
from strategies.stagewise.tuner import StagewiseTuner, grown_stages
from tuner_driver import fail, issue_all

REPO = Path(__file__).resolve().parents[1]


def config_args(name: str) -> dict:
    return yaml.safe_load((REPO / "nni_configs" / name).read_text())["tuner"]["classArgs"]


# ---- Table III (CIFAR-10): params and MACs of the nets as built here --------------------------------------------
TABLE_III = {  # stage depths: (params in M, MACs in M), as the paper prints them
    (7, 7, 7): (0.66, 97), (6, 8, 6): (0.60, 92), (9, 9, 9): (0.86, 125),
    (10, 12, 6): (0.69, 130), (18, 18, 18): (1.7, 253), (10, 14, 8): (0.88, 149),
}


@pytest.mark.parametrize("depths", list(TABLE_III))
def test_the_table_iii_nets_have_the_papers_params_and_macs(depths):
    params, macs = TABLE_III[depths]
    cost = measure_cost(cifar_resnet_spec(depths), (3, 32, 32))
    # The paper rounds to two digits (1.7M: one); our projection has a BN where the Keras net has a bias.
    assert cost.params / 1e6 == pytest.approx(params, abs=0.006 if params < 1 else 0.05)
    assert cost.macs / 1e6 == pytest.approx(macs, abs=1.0)


def test_the_space_is_he_et_als_cifar_resnet():
    spec = cifar_resnet_spec((6, 8, 6))
    assert spec.stem.kernel_size == 3 and spec.stem.stride == 1 and not spec.stem.max_pool
    assert spec.stage_out_channels() == [16, 32, 64] and spec.depths == (6, 8, 6)
    assert [stage.blocks[0].stride for stage in spec.stages] == [1, 2, 2]
    assert {block.kind for _, _, block in spec.iter_blocks()} == {"basic"}
    assert 2 * sum(spec.depths) + 3 == 43  # the paper's count: it=1 has 43 layers
    assert cifar_resnet_spec((9, 9, 9)) == cifar_resnet_spec((9, 9, 9), (16, 32, 64), 10, 3)  # ResNet-56
    with pytest.raises(SpecError, match="one depth per stage width"):
        cifar_resnet_spec((6, 6))
    with pytest.raises(SpecError, match="at least one block"):
        cifar_resnet_spec((6, 0, 6))


# ---- the growth rule ----------------------------------------------------------------------------------------
def test_a_stage_grows_only_where_its_temporary_score_is_higher():
    assert grown_stages([0.5, 0.6, 0.7], [0.6, 0.6, 0.1], [True, True, True]) == [True, False, False]
    assert grown_stages([0.5, 0.6], [0.9, 0.9], [True, False]) == [True, False]  # capped by the donor


def fake_result(params, scores):
    if params["kind"] == "candidate":
        depths = params["depths"]
        return {"default": 0.5, "val_accuracy": 0.5, "depths": depths, "iteration": params["iteration"],
                "stage_scores": scores(params), "params": sum(depths), "macs": 10 * sum(depths)}
    return {"default": 0.9, "test_accuracy": 0.9, "val_accuracy": 0.8, "start_default": 0.7, "export_dir": "x"}


def run_search(tuner, scores):
    """Answer every issued job until the tuner finishes; returns the batches of keys issued together."""
    batches, parameter_id = [], 0
    while not tuner.state["finished"]:
        issued = issue_all(tuner, parameter_id)
        assert issued, "the tuner stalled: nothing running and nothing to issue"
        parameter_id += len(issued)
        batches.append(sorted(issued))
        for params in issued.values():
            tuner.receive_trial_result(0, params, fake_result(params, scores))
    return batches


QUICK_ARGS = {"dataset": "digits", "widths": [8, 16, 32], "start_depths": [2, 2, 2], "delta": 2, "iterations": 3}


def scores_favouring(stage: int):
    """Deeper nets score higher on `stage` only: that stage grows every iteration, the others never."""
    return lambda params: [0.5 + 0.01 * params["depths"][i] if i == stage else 0.5 for i in range(3)]


def test_iterations_grow_the_favoured_stage_and_pair_each_grown_net_with_the_next_temporary(tmp_path):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **QUICK_ARGS)
    batches = run_search(tuner, scores_favouring(1))
    assert batches == [["iter1/temporary", "start"], ["iter1/grown", "iter2/temporary"],
                       ["iter2/grown", "iter3/temporary"], ["iter3/grown"], ["final"]]
    jobs = tuner.state["jobs"]
    assert jobs["iter1/temporary"]["params"]["depths"] == [4, 4, 4]
    assert [jobs[f"iter{k}/grown"]["params"]["depths"] for k in (1, 2, 3)] == [[2, 4, 2], [2, 6, 2], [2, 8, 2]]
    assert jobs["iter2/temporary"]["params"]["depths"] == [4, 6, 4]
    final = jobs["final"]["params"]
    assert final["source"].endswith("iter3/grown/model.ckpt") and final["start"].endswith("start/model.ckpt")
    summary = tuner.state["summary"]
    assert summary["start_default"] == 0.7 and summary["default"] == 0.9
    assert [row["depths"] for row in summary["iterations"]] == [[2, 2, 2], [2, 4, 2], [2, 6, 2], [2, 8, 2]]
    assert tuner.state["stop_reason"] == "3 iterations done"
    assert (tmp_path / "stagewise" / "stagewise.png").is_file()


def test_no_rising_score_ends_the_search_at_the_current_net(tmp_path):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **QUICK_ARGS)
    batches = run_search(tuner, lambda params: [0.5, 0.5, 0.5])
    assert batches == [["iter1/temporary", "start"], ["final"]]
    assert tuner.state["jobs"]["final"]["params"]["source"].endswith("start/model.ckpt")
    assert tuner.state["stop_reason"] == "no stage's score rose in iteration 1"


def test_extend_every_trains_each_grown_net_beside_the_search_and_the_final_reuses_the_last(tmp_path):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **{**QUICK_ARGS, "iterations": 2}, extend="every")
    batches = run_search(tuner, scores_favouring(0))
    assert batches == [["iter1/temporary", "start"], ["iter1/grown", "iter2/temporary"],
                       ["iter1/extended", "iter2/grown"], ["iter2/extended"], ["final"]]
    final = tuner.state["jobs"]["final"]["params"]
    assert final["source"].endswith("iter2/extended/model.ckpt") and final["extra_epochs"] == 0
    rows = tuner.state["summary"]["iterations"]
    assert [row.get("extended_test_accuracy") for row in rows] == [None, 0.9, 0.9]


def test_train_donor_comes_first_and_caps_the_depths(tmp_path):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **QUICK_ARGS, train_donor=True, donor_depths=[4, 6, 4],
                           epochs=2, donor_epochs=5)
    first = issue_all(tuner)
    assert list(first) == ["donor"] and first["donor"]["depths"] == [4, 6, 4] and first["donor"]["epochs"] == 5
    tuner.receive_trial_result(0, first["donor"], fake_result(first["donor"], scores_favouring(1)))
    batches = run_search(tuner, scores_favouring(1))
    jobs = tuner.state["jobs"]
    assert all(job["params"].get("donor", "").endswith("donor/model.ckpt")
               for key, job in jobs.items() if key not in ("donor", "final"))
    # Stage 2 grows 2 -> 4 -> 6; it cannot pass the donor's 6, so iteration 3's temporary net grows the others only.
    assert [jobs[f"iter{k}/grown"]["params"]["depths"] for k in (1, 2)] == [[2, 4, 2], [2, 6, 2]]
    assert jobs["iter3/temporary"]["params"]["depths"] == [4, 6, 4]
    assert batches[-1] == ["final"] and tuner.state["stop_reason"] == "no stage's score rose in iteration 3"


def test_a_failed_grown_net_ends_the_search_at_the_net_before_it(tmp_path):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **QUICK_ARGS)
    opening = issue_all(tuner)
    for index, params in enumerate(opening.values()):
        tuner.receive_trial_result(index, params, fake_result(params, scores_favouring(0)))
    second = issue_all(tuner, 10)
    ids = {key: 10 + index for index, key in enumerate(second)}
    fail(tuner, ids["iter1/grown"], second["iter1/grown"])
    tuner.receive_trial_result(ids["iter2/temporary"], second["iter2/temporary"],
                               fake_result(second["iter2/temporary"], scores_favouring(0)))
    final = issue_all(tuner, 20)
    assert list(final) == ["final"] and final["final"]["source"].endswith("start/model.ckpt")
    assert "iter1/grown failed" in tuner.state["stop_reason"]


def test_a_restarted_tuner_resumes_from_its_state_file(tmp_path):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **QUICK_ARGS)
    opening = issue_all(tuner)
    start = opening["start"]
    tuner.receive_trial_result(0, start, fake_result(start, scores_favouring(2)))
    # The manager dies with iter1/temporary running; NNI hands back the finished start on resume.
    resumed = StagewiseTuner(state_dir=str(tmp_path), **QUICK_ARGS)
    resumed.import_data([{"parameter": start, "value": json.dumps(fake_result(start, scores_favouring(2)))}])
    assert list(issue_all(resumed)) == ["iter1/temporary"]  # re-issued (its trial reports its result file)
    assert json.loads((tmp_path / STATE_FILE).read_text())["jobs"]["start"]["status"] == "done"


# ---- settings and the donor ---------------------------------------------------------------------------------
def test_the_paper_config_has_the_papers_settings():
    settings = parse_stagewise_args(config_args("stagewise.yml"))
    assert (settings.start_depths, settings.delta, settings.iterations) == ((6, 6, 6), 2, 5)
    assert (settings.epochs, settings.extra_epochs, settings.lr, settings.momentum) == (200, 100, 0.01, 0.9)
    assert (settings.weight_decay, settings.batch_size, settings.milestones) == (1e-4, 128, (0.5, 0.75))
    assert (settings.criterion, settings.n_components, settings.dataset, settings.widths) == (
        "pls", 2, "cifar10", (16, 32, 64))


@pytest.mark.parametrize("args, message", [
    ({"start_depths": [6, 6]}, "for each of the 3 widths"),
    ({"criterion": "vip"}, "one of 'pls', 'inf_fs'"),
    ({"milestones": [0.75, 0.5]}, "increasing fractions"),
    ({"donor": "/nonexistent/export"}, "does not exist"),
    ({"train_donor": True, "donor_depths": [4, 4, 4]}, r"exceed the donor's depths \[4, 4, 4\]"),
    ({"deltaa": 2}, "did you mean 'delta'"),
])
def test_bad_settings_are_refused_in_one_sentence(args, message):
    with pytest.raises(SettingsError, match=message):
        parse_stagewise_args(args)


def test_a_donor_of_other_widths_is_refused(tmp_path):
    (tmp_path / EXPORT_SPEC_FILE).write_text(cifar_resnet_spec((18, 18, 18), (8, 16, 32)).to_json())
    (tmp_path / EXPORT_WEIGHTS_FILE).write_bytes(b"")
    assert donor_spec(tmp_path, (8, 16, 32)).depths == (18, 18, 18)
    with pytest.raises(SettingsError, match="not a CIFAR ResNet of widths"):
        donor_spec(tmp_path, (16, 32, 64))
    with pytest.raises(SettingsError, match="arch.json and weights"):
        donor_spec(tmp_path / "missing.ckpt", (8, 16, 32))
    with pytest.raises(SettingsError, match=r"start_depths \[6, 6, 20\] exceed the donor's depths \[18, 18, 18\]"):
        parse_stagewise_args({"donor": str(tmp_path), "widths": [8, 16, 32], "start_depths": [6, 6, 20]})
    assert parse_stagewise_args({"donor": str(tmp_path), "widths": [8, 16, 32]}).max_depths == (18, 18, 18)


def test_weight_transfer_takes_the_first_blocks_of_each_stage():
    donor = {"conv1.weight": 0, "layer1.0.conv1.weight": 1, "layer1.1.conv1.weight": 2, "layer2.0.conv1.weight": 3,
             "fc.weight": 4}
    assert transferred_weights(donor, ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight",
                                       "fc.weight"]) == {"conv1.weight": 0, "layer1.0.conv1.weight": 1,
                                                         "layer2.0.conv1.weight": 3, "fc.weight": 4}
    with pytest.raises(SettingsError, match="deeper than the donor"):
        transferred_weights(donor, ["layer2.1.conv1.weight"])


def test_the_export_file_names_are_the_exporters():
    from search_spaces import export

    assert (EXPORT_SPEC_FILE, EXPORT_WEIGHTS_FILE) == (export.SPEC_FILE, export.WEIGHTS_FILE)


def test_when_every_stage_grows_the_temporary_net_is_the_grown_net(tmp_path):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **{**QUICK_ARGS, "iterations": 2})
    batches = run_search(tuner, lambda params: [0.5 + 0.01 * depth for depth in params["depths"]])
    # No iter{k}/grown job: the temporary net of the same depths, seed and data order is trained already.
    assert batches == [["iter1/temporary", "start"], ["iter2/temporary"], ["final"]]
    assert tuner.state["jobs"]["final"]["params"]["source"].endswith("iter2/temporary/model.ckpt")
    assert [row["depths"] for row in tuner.state["summary"]["iterations"]] == [[2, 2, 2], [4, 4, 4], [6, 6, 6]]
