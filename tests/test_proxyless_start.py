"""ProxylessNAS from a pretrained ResNet-50 (settings start / retrain_from): the supernet's paths start as the
pretrained network (5x5 candidates as its zero-padded 3x3s), a start that is not the space's base network is
refused, and a trial searches and fine-tunes from it, recording where it came from. Weights are timm's random
init saved with save_for_hf (no network here)."""

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch

from search_spaces import ScopedResNet50
from search_spaces.errors import PretrainedError
from search_spaces.spaces.base_weights import base_weights_for, load_base_weights
from search_spaces.timm_import import import_timm_resnet
from strategies.proxyless import parse_tuner_args
from strategies.proxyless.binary_gates import install_binary_gates
from strategies.reporting import PrintReporter
from strategies.settings import SettingsError
from strategies.trial import run_trial
from test_proxyless_trial import SCOPE_CONFIGS, smoke_parameters
from test_timm_import import saved_timm_net

REPO = Path(__file__).resolve().parents[1]
FINETUNE_EXAMPLE = REPO / "nni_configs" / "examples" / "finetune_resnet50.yml"
CLASSES = 5
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def resnet50_folder(tmp_path_factory):
    """A random-weight timm resnet50 with 5 classes (drawn BN statistics), as save_for_hf writes it."""
    folder = tmp_path_factory.mktemp("pretrained") / "resnet50"
    return folder, saved_timm_net(folder, "resnet50", num_classes=CLASSES)


@pytest.fixture
def one_test_batch(monkeypatch):
    """The trial's test and val evaluations on one batch: a full-width ResNet-50 over digits' whole test split
    takes minutes on 2 cores, and these tests check what is recorded, not the accuracy."""
    from strategies.multi_trial import job_trial

    evaluate = job_trial.evaluate

    def on_one_batch(model, datamodule, split="test"):
        first = {name: (lambda loader=getattr(datamodule, f"{name}_dataloader"): itertools.islice(loader(), 1))
                 for name in ("test", "val")}
        return evaluate(model, SimpleNamespace(test_dataloader=first["test"], val_dataloader=first["val"]), split)

    monkeypatch.setattr(job_trial, "evaluate", on_one_batch)


def gated_space(source: str, scope: str = "f"):
    imported = import_timm_resnet(source, num_classes=CLASSES)
    space = ScopedResNet50(scope, num_classes=CLASSES)
    load_base_weights(space, imported.state_dict)
    return space, install_binary_gates(space)


@pytest.mark.parametrize("kernel", ["k3", "k5"])
def test_every_path_of_the_supernet_starts_as_the_pretrained_resnet50(resnet50_folder, one_thread_and_seeded,
                                                                        kernel):
    folder, timm_model = resnet50_folder
    space, bank = gated_space(f"local-dir:{folder}")
    bank.mode = "argmax"  # the network runs bank.active: every block at `kernel`, every activation ReLU
    bank.active = {label: bank.candidate_values[label].index(kernel if label.endswith("_kernel") else "relu")
                   for label in bank.labels}
    images = torch.randn(2, 3, 64, 64)  # 64 px: every stage at least 2x2 (224 would be slow on 2 cores)
    with torch.no_grad():
        torch.testing.assert_close(space.eval()(images), timm_model(images), rtol=0, atol=TOLERANCE)


def test_a_larger_candidate_is_the_zero_padded_kernel_and_activations_share_the_block(resnet50_folder):
    folder, timm_model = resnet50_folder
    space = ScopedResNet50("s", num_classes=CLASSES)
    weights = base_weights_for(space, import_timm_resnet(f"local-dir:{folder}", num_classes=CLASSES).state_dict)
    base = timm_model.state_dict()["layer4.1.conv2.weight"]
    k5 = weights["layer4.1.conv2.k5.weight"]
    assert torch.equal(k5[:, :, 1:4, 1:4], base) and k5.abs().sum() == base.abs().sum()
    assert torch.equal(weights["layer4.1.conv2.k3.weight"], base)
    assert torch.equal(weights["layer3.1.conv2.weight"], timm_model.state_dict()["layer3.1.conv2.weight"])  # unsearched


def test_a_start_that_is_not_the_spaces_base_network_is_refused(tmp_path, one_thread_and_seeded):
    from dataclasses import replace

    from strategies.proxyless.start import load_start
    from trainers import dataset_info

    timm.models.save_for_hf(timm.create_model("resnet18"), tmp_path / "resnet18", safe_serialization=True)
    start = f"local-dir:{tmp_path / 'resnet18'}"
    parameters = smoke_parameters(SCOPE_CONFIGS[0], start=start, width_multiplier=1.0)
    with pytest.raises(SettingsError, match=r"is a timm resnet18, .*start from a timm ResNet-50"):
        run_trial(parameters, tmp_path / "trial", PrintReporter())  # read from the folder's config.json, no torch
    assert not (tmp_path / "trial" / "supernet.ckpt").exists()
    # Where the name cannot be read here (hf-hub:), the trial's import compares the network itself.
    settings = replace(parse_tuner_args({"scope": "s", "dataset": "digits"})[0], start=start)
    with pytest.raises(PretrainedError, match=r"not the search space's base network .*start from a timm "
                                              r"ResNet-50") as refused:
        load_start(settings, dataset_info("digits"))
    assert str(refused.value).count(". ") == 0 and "\n" not in str(refused.value)  # one sentence


@pytest.mark.parametrize("settings, message", [
    ({"start": "timm:resnet50", "width_multiplier": 0.5}, "set stem: imagenet and width_multiplier: 1"),
    ({"start": "timm:resnet50", "stem": "cifar", "image_size": 33}, "set stem: imagenet and width_multiplier: 1"),
    ({"start": "resnet50"}, "start must name a pretrained ResNet-50"),
    ({"start": "timm:resnet18.a1_in1k"}, "is a timm resnet18, and the search space is built around ResNet-50"),
    ({"start": "local-dir:/no/such/folder"}, "not a timm model folder"),
    ({"retrain_from": "start"}, "no start is given"),
    ({"start": "timm:resnet50", "retrain_from": "imagenet"}, "not a valid one of 'scratch', 'start'"),
])
def test_start_settings_are_checked_without_torch(settings, message):
    with pytest.raises(SettingsError, match=message):
        parse_tuner_args({"scope": "s", **settings})


def test_a_search_from_a_pretrained_resnet50_fine_tunes_the_found_path(resnet50_folder, tmp_path, one_test_batch):
    folder, _ = resnet50_folder
    source = f"local-dir:{folder}"
    parameters = smoke_parameters(SCOPE_CONFIGS[0], start=source, retrain_from="start", width_multiplier=1.0,
                                  limit_train_batches=1, batch_size=4)
    reporter = PrintReporter()
    result = run_trial(parameters, tmp_path, reporter)
    assert result["retrain_from"] == "start" and result["start_origin"]["source"] == source
    assert result["start_origin"]["changes"] == ["conv1 adapted from 3 to 1 input channels (timm's adapt_input_conv)",
                                                 "fc re-initialised for 10 classes (was 5)"]  # digits: gray, 10
    record = json.loads((tmp_path / "timm_export" / "resnas.json").read_text())
    assert record["provenance"]["start_network"] == result["start_origin"]
    card = (tmp_path / "timm_export" / "README.md").read_text()
    assert "supernet initialised from the start network" in card and "fine-tuned from the start network" in card
    assert f"**Started from:** timm resnet50" in card


def test_scope_none_with_a_start_is_the_plain_fine_tuned_baseline(resnet50_folder, tmp_path, one_test_batch):
    folder, _ = resnet50_folder
    parameters = smoke_parameters(REPO / "nni_configs" / "proxyless_scopes.yml", scope="none", image_size=64,
                                  width_multiplier=1.0, start=f"local-dir:{folder}", retrain_from="start",
                                  batch_size=4)
    result = run_trial(parameters, tmp_path, PrintReporter())
    assert (result["scope"], result["architecture"], result["retrain_from"]) == ("none", {}, "start")
    assert result["start_origin"]["architecture"] == "resnet50" and not (tmp_path / "supernet.ckpt").exists()
    card = (tmp_path / "timm_export" / "README.md").read_text()
    assert "(no search), fine-tuned from the start network" in card and "**Started from:** timm resnet50" in card


def test_the_baseline_from_scratch_does_not_read_the_start():
    from strategies.proxyless.start import uses_start

    settings = parse_tuner_args({"scopes": ["none", "s"], "start": "timm:resnet50"})
    assert [uses_start(scope) for scope in settings] == [False, True]  # the paper's baseline stays from scratch


def test_the_fine_tuning_example_validates_here():
    from strategies.cli import main
    from strategies.launch.config import load_experiment_config

    assert main(["validate", "--no-gpu-check", "--no-data-check", str(FINETUNE_EXAMPLE)]) == 0
    class_args = load_experiment_config(FINETUNE_EXAMPLE)["tuner"]["classArgs"]
    settings = parse_tuner_args(class_args)
    assert [s.scope for s in settings] == ["none", "m"]
    assert {(s.start, s.retrain_from) for s in settings} == {("timm:resnet50.a1_in1k", "start")}
