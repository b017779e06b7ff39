"""Stage-wise search from a pretrained timm ResNet donor: the searched networks are the donor's own (stem, blocks,
widths, stage count) cut to n_i blocks per stage, read from its name without torch; every candidate starts from
the donor's first blocks; a tiny search runs in process and its export names the donor. Weights are timm's random
init saved with save_for_hf (no network here)."""

import json

import pytest
import torch

from search_spaces import build_model, resnet_spec
from search_spaces.timm_import import import_timm_resnet
from strategies.reporting import PrintReporter
from strategies.settings import SettingsError
from strategies.stagewise.settings import parse_stagewise_args
from strategies.stagewise.trial import run_stagewise_trial
from strategies.stagewise.tuner import StagewiseTuner
from test_timm_import import saved_timm_net
from trainers import load_checkpoint
from tuner_driver import issue_all, run_to_end

# 32 px: the 7x7/2 stem and max pool leave stage 4 at 1x1, enough to score; narrow batches keep it quick.
DIGITS = {"dataset": "digits", "image_size": 32, "batch_size": 32, "num_workers": 0, "limit_train_batches": 1,
          "limit_val_batches": 1, "score_samples": 40, "epochs": 1, "extra_epochs": 0}


@pytest.fixture(scope="module")
def resnet18_donor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained") / "resnet18"
    saved_timm_net(folder, "resnet18")
    return f"local-dir:{folder}"


def test_the_searched_networks_are_the_donors_own_cut_per_stage(resnet18_donor):
    settings = parse_stagewise_args({"donor": resnet18_donor, "start_depths": [1, 2, 1, 1], "dataset": "digits"})
    assert settings.timm_donor and settings.max_depths == (2, 2, 2, 2)
    spec = settings.network((1, 2, 1, 1), 10, 1)
    full = resnet_spec(18, num_classes=10, in_channels=1)
    assert spec.stem == full.stem and spec.depths == (1, 2, 1, 1) and spec.stage_out_channels() == [64, 128, 256, 512]
    assert [stage.blocks for stage in spec.stages] == [stage.blocks[:depth] for stage, depth in
                                                       zip(full.stages, (1, 2, 1, 1))]
    assert parse_stagewise_args({"donor": "timm:resnet50.a1_in1k", "start_depths": [3, 4, 6, 3]}).max_depths == \
        (3, 4, 6, 3)  # a timm name is read without torch or network


@pytest.mark.parametrize("args, message", [
    ({"start_depths": [1, 1, 1]}, r"each of the 4 stages of the donor"),
    ({"start_depths": [1, 3, 1, 1]}, r"exceed the donor's depths \[2, 2, 2, 2\]"),
])
def test_start_depths_follow_the_donors_stages(resnet18_donor, args, message):
    with pytest.raises(SettingsError, match=message):
        parse_stagewise_args({"donor": resnet18_donor, **args})


@pytest.mark.parametrize("donor, message", [
    ("timm:resnet50d", "plain torchvision-layout ResNets only"),
    ("hf-hub:timm/resnet18.a1_in1k", "without downloading it"),
    ("local-dir:/no/such/folder", "not a timm model folder"),
])
def test_donors_whose_layout_cannot_be_read_here_are_refused(donor, message):
    with pytest.raises(SettingsError, match=message):
        parse_stagewise_args({"donor": donor, "start_depths": [1, 1, 1, 1]})


def test_a_candidate_starts_from_the_timm_donors_first_blocks(resnet18_donor, tmp_path, one_thread_and_seeded):
    settings = {**DIGITS, "donor": resnet18_donor, "start_depths": [1, 1, 1, 1], "lr": 1e-12}  # (almost) no step
    params = {"kind": "candidate", "role": "start", "iteration": 0, "depths": [1, 2, 1, 1], "epochs": 1,
              "donor": resnet18_donor, "job": "start", "out_dir": str(tmp_path / "start"), "settings": settings}
    result = run_stagewise_trial(params, tmp_path, PrintReporter())
    assert result["transferred"] and result["depths"] == [1, 2, 1, 1] and len(result["stage_scores"]) == 4
    weights = load_checkpoint(tmp_path / "start" / "model.ckpt")["state_dict"]
    donor = import_timm_resnet(resnet18_donor, num_classes=10, in_channels=1).state_dict  # digits: 10, gray
    assert "layer1.1.conv1.weight" not in weights and "layer2.1.conv1.weight" in weights
    # The first conv adapted to gray as the import does; fc is a fresh 10-class head (its draw is the trial's).
    for key in ("conv1.weight", "layer1.0.conv2.weight", "layer2.1.conv2.weight", "layer4.0.downsample.0.weight"):
        torch.testing.assert_close(weights[key], donor[key], rtol=1e-6, atol=1e-9)


def test_a_tiny_search_grows_within_the_donor_and_exports_with_its_origin(resnet18_donor, tmp_path,
                                                                            one_thread_and_seeded):
    tuner = StagewiseTuner(state_dir=str(tmp_path), **DIGITS, donor=resnet18_donor, start_depths=[1, 1, 1, 1],
                           delta=1, iterations=1)
    assert sorted(issue_all(tuner)) == ["iter1/temporary", "start"]  # start [1,1,1,1], temporary [2,2,2,2]
    tuner = StagewiseTuner(state_dir=str(tmp_path / "fresh"), **DIGITS, donor=resnet18_donor,
                           start_depths=[1, 1, 1, 1], delta=1, iterations=1)
    keys = run_to_end(tuner, lambda params: run_stagewise_trial(params, tmp_path, PrintReporter()))
    assert keys[-1] == "final" and tuner.state["summary"]["iterations"][0]["depths"] == [1, 1, 1, 1]
    jobs = tuner.state["jobs"]
    assert jobs["iter1/temporary"]["params"]["depths"] == [2, 2, 2, 2]  # the donor's depths: no further growth
    export = tmp_path / "fresh" / "stagewise" / "final" / "timm_export"
    record = json.loads((export / "resnas.json").read_text())
    assert record["provenance"]["start_network"]["source"] == resnet18_donor
    assert "stages of the pretrained resnet18 grown" in (export / "README.md").read_text()
    model = build_model(resnet_spec(18, num_classes=10, in_channels=1))  # the final net loads as resnas's resnet18 prefix
    assert set(load_checkpoint(jobs["final"]["params"]["source"])["state_dict"]) <= set(model.state_dict())
