"""Pretrained timm ResNets as start nets: the import computes timm's logits exactly, refuses what resnas cannot
express by naming it, fits a new head and first conv, records its origin on the card, and NASH grows from it
with the function kept. Weights are timm's random init saved with save_for_hf (no network here)."""

import hashlib
import json
import random
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from search_spaces import build_model, export_to_timm, nash_start_spec, plain_timm_resnet, resnet_spec
from search_spaces.edits.morphism_ops import draw_morphisms
from search_spaces.errors import PretrainedError
from search_spaces.model_card import ModelCard
from search_spaces.timm_import import import_timm_resnet, timm_resnet_spec
from strategies.settings import SettingsError

INPUT = (2, 3, 64, 64)  # 64 px keeps every stage of an ImageNet-stem ResNet at least 2x2; ResNet-50 at 224 is slow
TOLERANCE = 1e-5


def timm_net(name: str, **kwargs) -> torch.nn.Module:
    """timm's random init with BN statistics and affines drawn too: fresh ones (mean 0, var 1) would let a wrong
    BN mapping pass."""
    model = timm.create_model(name, **kwargs)
    generator = torch.Generator().manual_seed(len(name))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
    return model.eval()


def saved_timm_net(folder: Path, name: str, **kwargs) -> torch.nn.Module:
    """timm_net(name) saved into `folder` as save_for_hf writes a pretrained model (what `local-dir:` reads)."""
    torch.manual_seed(0)
    model = timm_net(name, **kwargs)
    timm.models.save_for_hf(model, folder, safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def resnet18_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained") / "resnet18"
    return folder, saved_timm_net(folder, "resnet18")


@pytest.mark.parametrize("name, depth", [("resnet18", 18), ("resnet34", 34), ("resnet50", 50)])
def test_the_import_computes_timms_logits(tmp_path, one_thread_and_seeded, name, depth):
    model = timm_net(name)
    timm.models.save_for_hf(model, tmp_path / name, safe_serialization=True)
    imported = import_timm_resnet(f"local-dir:{tmp_path / name}")
    assert imported.spec == resnet_spec(depth)  # resnas's own ResNet: the export writes it back as timm's name
    assert plain_timm_resnet(imported.spec)[0] == name
    ours = build_model(imported.spec).eval()
    ours.load_state_dict(imported.state_dict, strict=True)
    images = torch.randn(INPUT)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), model(images), rtol=0, atol=TOLERANCE)
    origin = imported.origin
    assert (origin.architecture, origin.changes) == (name, ())
    assert origin.weights_sha256 == hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("name, kwargs, variant", [
    ("resnet50d", {}, "deep stem"),
    ("resnet18", {"avg_down": True}, "average-pool shortcut"),
    ("seresnet18", {}, "squeeze-and-excitation"),
    ("resnext50_32x4d", {}, "grouped convolutions"),
    ("resnetaa50", {}, "anti-aliasing"),
    ("resnet18", {"drop_path_rate": 0.1}, "drop path"),
    ("resnet18", {"output_stride": 16}, "dilated"),
    ("efficientnet_b0", {}, "not a ResNet"),
])
def test_variants_resnas_cannot_express_are_refused_by_name(name, kwargs, variant):
    with torch.device("meta"):  # the structure alone decides: no memory, no weights
        model = timm.create_model(name, **kwargs)
    with pytest.raises(PretrainedError, match=variant) as refused:
        timm_resnet_spec(model, f"timm:{name}")
    assert str(refused.value).count(". ") == 0 and str(refused.value).endswith(".")  # one sentence


def test_a_variant_is_found_from_the_modules_not_the_name(tmp_path, one_thread_and_seeded):
    timm.models.save_for_hf(timm.create_model("resnet18d"), tmp_path / "my_resnet", safe_serialization=True)
    with pytest.raises(PretrainedError, match=r"local-dir:.*my_resnet has a deep stem"):
        import_timm_resnet(f"local-dir:{tmp_path / 'my_resnet'}")
    with pytest.raises(PretrainedError, match="deep stem"):  # refused before any download is tried
        import_timm_resnet("timm:resnet50d")


def test_a_new_head_and_first_conv_keep_everything_else(resnet18_folder, one_thread_and_seeded):
    folder, model = resnet18_folder
    imported = import_timm_resnet(f"local-dir:{folder}", num_classes=3, in_channels=1)
    spec, weights = imported.spec, imported.state_dict
    assert (spec.head.num_classes, spec.in_channels) == (3, 1) and spec.stages == resnet_spec(18).stages
    theirs = model.state_dict()
    assert weights.keys() == theirs.keys() and weights["fc.weight"].shape == (3, 512)
    for key in theirs.keys() - {"conv1.weight", "fc.weight", "fc.bias"}:
        assert torch.equal(weights[key], theirs[key]), key
    ours = build_model(spec).eval()
    ours.load_state_dict(weights, strict=True)
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # timm's adapt_input_conv sums the RGB filters: a gray image is its copy on three channels
        torch.testing.assert_close(ours.forward_features(gray), model.forward_features(gray.repeat(1, 3, 1, 1)),
                                   rtol=1e-4, atol=TOLERANCE)
    assert [change.split(" ")[0] for change in imported.origin.changes] == ["conv1", "fc"]


def test_a_weights_file_with_an_architecture_name(tmp_path, one_thread_and_seeded):
    model = timm_net("resnet18", num_classes=7)  # a net fine-tuned elsewhere: the file's head decides the classes
    save_file(model.state_dict(), str(tmp_path / "tuned.safetensors"))
    imported = import_timm_resnet(f"timm:resnet18.a1_in1k@{tmp_path / 'tuned.safetensors'}")
    assert imported.spec.head.num_classes == 7 and imported.origin.pretrained_tag == "a1_in1k"
    assert imported.origin.weights_sha256 == hashlib.sha256((tmp_path / "tuned.safetensors").read_bytes()).hexdigest()
    with pytest.raises(PretrainedError, match="does not hold resnet34's weights"):
        import_timm_resnet(f"timm:resnet34@{tmp_path / 'tuned.safetensors'}")


def test_offline_without_a_cache_names_the_local_dir_fix(monkeypatch):
    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise LocalEntryNotFoundError("no network")
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedError, match=r"save_for_hf.*local-dir:FOLDER\.$"):
        import_timm_resnet("timm:resnet18")


def test_the_card_and_resnas_json_name_the_start_network(resnet18_folder, tmp_path, one_thread_and_seeded):
    origin = import_timm_resnet(f"local-dir:{resnet18_folder[0]}", num_classes=5).origin
    spec = nash_start_spec(num_classes=5, widths=(4, 8, 8))
    folder = export_to_timm(spec, build_model(spec), tmp_path / "export", card=ModelCard(start_origin=origin))
    card = (folder / "README.md").read_text()
    assert f"**Started from:** timm resnet18 (a1_in1k) from `local-dir:{resnet18_folder[0]}`" in card
    assert origin.weights_sha256 in card and "fc re-initialised for 5 classes (was 1000)" in card
    record = json.loads((folder / "resnas.json").read_text())
    assert record["provenance"]["start_network"] == record["card"]["start_origin"] == origin.to_dict()


def test_settings_take_one_start_name_and_stagewise_a_timm_donor(resnet18_folder, tmp_path):
    from strategies.hill_climbing import parse_hill_climbing_args
    from strategies.layer_pruning import parse_layer_pruning_args
    from strategies.stagewise import parse_stagewise_args

    local = f"local-dir:{resnet18_folder[0]}"
    assert parse_hill_climbing_args({"start": local, "pretrain_epochs": 0}).pretrain_epochs == 0
    assert parse_layer_pruning_args({"start": "timm:resnet50.a1_in1k"}).start == "timm:resnet50.a1_in1k"
    with pytest.raises(SettingsError, match="0 only for a pretrained start"):
        parse_hill_climbing_args({"pretrain_epochs": 0})
    with pytest.raises(SettingsError, match="not a timm model folder"):
        parse_layer_pruning_args({"start": f"local-dir:{tmp_path}"})
    # A timm donor makes the searched networks its own (tests/test_stagewise_timm_donor.py): one depth per its stage.
    with pytest.raises(SettingsError, match="for each of the 4 stages of the donor timm:resnet18"):
        parse_stagewise_args({"donor": "timm:resnet18"})
    assert parse_stagewise_args({"donor": local, "start_depths": [1, 1, 1, 1]}).max_depths == (2, 2, 2, 2)


def test_nash_grows_from_a_pretrained_resnet18_with_its_function_kept(resnet18_folder, tmp_path,
                                                                       one_thread_and_seeded):
    from search_spaces.spec import ArchSpec
    from strategies.hill_climbing.trial import run_hill_climbing_trial
    from strategies.multi_trial.job_trial import build_with_weights, load_job_model
    from strategies.reporting import PrintReporter

    settings = {"dataset": "digits", "image_size": 32, "augment": "none", "num_workers": 0, "batch_size": 128,
                "start": f"local-dir:{resnet18_folder[0]}", "pretrain_epochs": 0, "n_morphisms": 3, "seed": 0}

    def job(name, **parameters):
        return run_hill_climbing_trial({"job": name, "out_dir": str(tmp_path / name), "settings": settings,
                                        "epochs": 0, **parameters}, tmp_path, PrintReporter())

    start = job("start", kind="start")  # 0 pretrain epochs: the imported net, evaluated as it is
    assert start["train_seconds"] == 0.0 and start["start_origin"]["architecture"] == "resnet18"
    spec = ArchSpec.from_json((tmp_path / "start" / "arch.json").read_text())
    assert (spec.in_channels, spec.head.num_classes, spec.depths) == (1, 10, (2, 2, 2, 2))  # digits: gray, 10 classes
    morphisms, _ = draw_morphisms(spec, 3, random.Random(0))
    child = job("child", kind="child", parent=str(tmp_path / "start" / "model.ckpt"), parent_job="start",
                morphisms=[morphism.to_dict() for morphism in morphisms])
    assert child["val_accuracy"] == start["val_accuracy"]  # the morphisms keep the function: same predictions
    parent_model, child_model = (build_with_weights(*load_job_model(tmp_path / name / "model.ckpt")).eval()
                                 for name in ("start", "child"))
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(child_model(images), parent_model(images), rtol=0, atol=TOLERANCE)
    final = job("final", kind="final", parent=str(tmp_path / "child" / "model.ckpt"), parent_job="child",
                start=str(tmp_path / "start" / "model.ckpt"), start_origin=start["start_origin"], ensemble=[])
    assert final["default"] == final["start_default"]  # no epoch anywhere: the final net is the start net's function
    assert "**Started from:** timm resnet18" in (tmp_path / "final" / "timm_export" / "README.md").read_text()


def test_the_tuners_hand_the_start_origin_to_the_final_job(tmp_path):
    from strategies.hill_climbing import HillClimbingTuner
    from tuner_driver import issue_all_with_ids

    origin = {"source": "timm:resnet18", "architecture": "resnet18", "pretrained_tag": "a1_in1k",
              "hf_hub_id": "timm/resnet18.a1_in1k", "weights_sha256": None, "changes": []}
    tuner = HillClimbingTuner(state_dir=str(tmp_path), dataset="digits", start="timm:resnet18", pretrain_epochs=0,
                              n_steps=1, n_neighbours=2, n_morphisms=1)
    spec = resnet_spec(18, num_classes=10, in_channels=1).to_json()
    issued = issue_all_with_ids(tuner)
    for round_ in (1, 2):  # the start job, then step 1's child and retrained parent
        for key, (parameter_id, params) in issued.items():
            (tmp_path / "hill_climbing" / key).mkdir(parents=True, exist_ok=True)
            (tmp_path / "hill_climbing" / key / "arch.json").write_text(spec)
            extra = {"start_origin": origin} if key == "start" else {}
            assert params["epochs"] == (0 if key == "start" else 17)
            tuner.receive_trial_result(parameter_id, params, {"default": 0.5, "val_accuracy": 0.5, "params": 1,
                                                              "flops": 1, **extra})
        issued = issue_all_with_ids(tuner, 10 * round_)
    (_, final), = issued.values()
    assert final["kind"] == "final" and final["start_origin"] == origin
