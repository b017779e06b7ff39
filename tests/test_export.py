"""timm export: reloaded logits equal the original's; plain ResNets load with bare timm in a process that cannot
import resnas, everything else through the resnas_net entry point; features_only works for both."""

import importlib
import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import search_spaces
from search_spaces import (
    ENTRY_POINT,
    ExportError,
    build_model,
    export_to_timm,
    load_exported,
    nash_start_spec,
    plain_timm_resnet,
    resnet_spec,
)
from search_spaces.model_card import ModelCard

REPO = Path(__file__).resolve().parents[1]
SIZE = (3, 32, 32)

# Run in a fresh interpreter: load the folder with timm, compare logits with the ones saved beside the inputs,
# print one JSON line. With BLOCK_RESNAS, importing any resnas package fails, so bare timm must do it all.
RELOAD_SCRIPT = """
import json, sys
if sys.argv[3] == "block":
    class BlockResnas:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("search_spaces", "strategies", "trainers"):
                raise ImportError(f"{name} must not be imported here")
    sys.meta_path.insert(0, BlockResnas())
else:  # the resnas entry point needs torch and timm only: importing NNI or Lightning here fails the test
    class BlockHeavy:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("nni", "pytorch_lightning", "lightning"):
                raise ImportError(f"{name} must not be imported to load an export")
    sys.meta_path.insert(0, BlockHeavy())
    import search_spaces.timm_entry  # registers resnas_net with timm
import timm, torch
from safetensors.torch import load_file
folder, io = sys.argv[1], load_file(sys.argv[2])
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
with torch.no_grad():
    difference = (model(io["x"]) - io["logits"]).abs().max().item()
features = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True).eval()
shapes = [list(f.shape) for f in features(io["x"])]
print(json.dumps(dict(
    difference=difference, channels=features.feature_info.channels(), reduction=features.feature_info.reduction(),
    shapes=shapes, mean=list(model.pretrained_cfg["mean"]), resnas_loaded="search_spaces" in sys.modules,
    label_names=model.pretrained_cfg.get("label_names"),
)))
"""


def perturbed(model):
    """Random BN statistics and scales, so a wrong mapping cannot hide behind zero-init or unit BN."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def mixed_spec():
    """A searched-looking ResNet-50: CIFAR stem, narrow, a 5x5 Mish block and a LeakyReLU block."""
    spec = resnet_spec(50, num_classes=10, stem="cifar", width_multiplier=0.125)
    spec = spec.replace_block(3, 1, replace(spec.stages[2].blocks[1], kernel_size=5, activation="mish"))
    return spec.replace_block(4, 0, replace(spec.stages[3].blocks[0], kernel_size=5, activation="leaky_relu"))


def reload_in_fresh_process(tmp_path, folder, model, block_resnas):
    x = torch.randn(2, *SIZE, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fresh process (OMP_NUM_THREADS=1): another split of the sums differs by ~1e-5
    try:
        with torch.no_grad():
            save_file({"x": x, "logits": model(x)}, str(tmp_path / "io.safetensors"))
    finally:
        torch.set_num_threads(threads)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "io.safetensors"), "block" if block_resnas else "-"],
        capture_output=True, text=True, cwd=tmp_path if block_resnas else REPO, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plain_resnet18_loads_with_bare_timm_in_a_process_that_cannot_import_resnas(tmp_path):
    spec = resnet_spec(18, num_classes=10, width_multiplier=1.0, stage_depths=(1, 2, 2, 1))
    assert plain_timm_resnet(spec) == ("resnet18", {"layers": [1, 2, 2, 1], "in_chans": 3})
    model = perturbed(build_model(spec))
    folder = export_to_timm(spec, model, tmp_path / "export", input_size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3)
    seen = reload_in_fresh_process(tmp_path, folder, model, block_resnas=True)
    assert seen["difference"] <= 1e-6 and not seen["resnas_loaded"]
    assert seen["channels"] == [64, 64, 128, 256, 512] and seen["reduction"] == [2, 4, 8, 16, 32]
    assert [s[-1] for s in seen["shapes"]] == [16, 8, 4, 2, 1] and seen["mean"] == [0.5] * 3
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["model_args"] == {"layers": [1, 2, 2, 1], "in_chans": 3}
    assert config["num_classes"] == 10 and config["num_features"] == 512
    assert {k: config["pretrained_cfg"][k] for k in ("mean", "std", "input_size", "num_classes")} == {
        "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32], "num_classes": 10}
    assert (config["pretrained_cfg"]["first_conv"], config["pretrained_cfg"]["classifier"]) == ("conv1", "fc")
    retargeted = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=3)
    assert retargeted.fc.out_features == 3 and torch.equal(retargeted.conv1.weight, model.conv1.weight)


def test_searched_network_loads_through_the_entry_point_in_a_fresh_process(tmp_path):
    spec = mixed_spec()
    assert plain_timm_resnet(spec) is None
    model = perturbed(build_model(spec))
    card = ModelCard(dataset="digits-like", label_names=tuple("0123456789"), test_accuracy=0.5, test_split="test")
    folder = export_to_timm(spec, model, tmp_path / "export", input_size=SIZE, card=card)
    seen = reload_in_fresh_process(tmp_path, folder, model, block_resnas=False)  # NNI and Lightning blocked
    assert seen["difference"] <= 1e-6 and seen["label_names"] == list("0123456789")
    assert seen["channels"] == [8, 32, 64, 128, 256] and seen["reduction"] == [1, 1, 2, 4, 8]
    assert [s[-1] for s in seen["shapes"]] == [32, 32, 16, 8, 4]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == ENTRY_POINT and config["model_args"]["in_chans"] == 3
    assert search_spaces.ArchSpec.from_dict(config["model_args"]["arch_spec"]) == spec
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]


@pytest.mark.parametrize(
    "spec,expected",
    [
        (resnet_spec(34, num_classes=10), "resnet34"),
        (resnet_spec(50, num_classes=10, stage_depths=(1, 1, 2, 1)), "resnet50"),
        (resnet_spec(18, num_classes=10, in_channels=1), "resnet18"),
        (resnet_spec(18, stem="cifar"), None),
        (resnet_spec(18, width_multiplier=0.5), None),
        (resnet_spec(18, stage_depths=(2, 2, 2)), None),
        (resnet_spec(18, stage_depths=(2, 0, 2, 2)), None),
        (replace(resnet_spec(18), head=replace(resnet_spec(18).head, dropout=0.2)), None),
        (nash_start_spec(), None),
    ],
    ids=["r34", "r50-shallow", "r18-gray", "cifar-stem", "narrow", "3-stages", "empty-stage", "dropout", "nash"],
)
def test_only_what_timms_resnet_builds_is_exported_as_plain(spec, expected):
    plain = plain_timm_resnet(spec)
    assert (plain[0] if plain else None) == expected


def test_features_only_num_classes_and_drop_rate_for_the_entry_point(tmp_path):
    spec = nash_start_spec(num_classes=10, widths=(4, 8, 16))  # two stages: three feature maps, not timm's five
    model = perturbed(build_model(spec))
    folder = export_to_timm(spec, model, tmp_path / "export", input_size=SIZE)
    features = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True)
    assert features.feature_info.channels() == [4, 8, 16] and features.feature_info.reduction() == [1, 2, 4]
    picked = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True, out_indices=(2,))
    assert [o.shape for o in picked(torch.randn(1, *SIZE))] == [(1, 16, 8, 8)]
    retargeted = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=3).eval()
    x = torch.randn(2, *SIZE)
    assert retargeted(x).shape == (2, 3)
    assert torch.equal(retargeted.conv1.weight, model.conv1.weight)  # the body still loads
    pooled = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()
    assert torch.allclose(pooled(x), model.forward_head(model.forward_features(x), pre_logits=True))
    assert timm.create_model(f"local-dir:{folder}", drop_rate=0.3).head_drop.p == 0.3
    with pytest.raises(TypeError, match="drop_path_rate"):
        timm.create_model(f"local-dir:{folder}", drop_path_rate=0.1)


def test_a_grayscale_export_reloads_with_identical_logits(tmp_path):
    spec = resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.125, in_channels=1)
    model = perturbed(build_model(spec))
    folder = export_to_timm(spec, model, tmp_path / "export", input_size=(1, 32, 32))
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == [0.5] and config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    loaded_spec, loaded = load_exported(folder)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert loaded_spec == spec and (loaded(x) - model(x)).abs().max() <= 1e-6


def test_folder_holds_safetensors_json_and_no_pickle(tmp_path):
    spec = mixed_spec()
    model = build_model(spec)
    folder = export_to_timm(spec, model, tmp_path / "export", extra={"test_accuracy": 0.9})
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "arch_spec.json", "config.json", "model.safetensors", "resnas.json"]
    record = json.loads((folder / "resnas.json").read_text())
    assert set(record) == {"test_accuracy", "provenance", "card"} and record["test_accuracy"] == 0.9
    assert load_file(str(folder / "model.safetensors")).keys() == model.state_dict().keys()
    for path in folder.iterdir():  # a pickle starts with the PROTO opcode 0x80; zip-pickles with PK
        assert path.read_bytes()[:2] not in (b"\x80\x02", b"\x80\x04", b"\x80\x05", b"PK")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging folder left beside it


def test_a_failed_export_keeps_the_previous_one_and_leaves_nothing_else(tmp_path):
    spec = resnet_spec(18, num_classes=10, width_multiplier=0.125, stem="cifar")
    folder = export_to_timm(spec, build_model(spec), tmp_path / "export")
    before = (folder / "model.safetensors").read_bytes()
    other = resnet_spec(34, num_classes=10, width_multiplier=0.125, stem="cifar")
    with pytest.raises(ExportError, match=r"do not match the spec \(96 tensors are not in the spec, e.g. layer1.2"):
        export_to_timm(spec, _Weights(build_model(other)), tmp_path / "export")
    assert (folder / "model.safetensors").read_bytes() == before
    replacement = build_model(spec)
    export_to_timm(spec, replacement, tmp_path / "export")  # replacing an export is allowed
    assert load_file(str(folder / "model.safetensors"))["fc.weight"].equal(replacement.fc.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


class _Weights(torch.nn.Module):
    """Another network's weights without its arch_spec attribute, as a foreign module would carry them."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)


def test_export_refuses_a_model_of_another_spec_and_a_folder_of_other_files(tmp_path):
    spec = resnet_spec(18, num_classes=10, width_multiplier=0.125, stem="cifar")
    relu_model = build_model(spec)
    mish = spec.replace_block(1, 0, replace(spec.stages[0].blocks[0], activation="mish"))
    with pytest.raises(ExportError, match="different ArchSpec"):
        export_to_timm(mish, relu_model, tmp_path / "export")  # same shapes, different function
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export"):
        export_to_timm(spec, relu_model, tmp_path / "home")
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"
    with pytest.raises(search_spaces.SpecError, match="mean and std need 3 values"):
        export_to_timm(spec, relu_model, tmp_path / "export", mean=(0.5,))
    with pytest.raises(search_spaces.SpecError, match=r"must be \(3, H, W\)"):
        export_to_timm(spec, relu_model, tmp_path / "export", input_size=(1, 32, 32))


def test_registration_is_idempotent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is registered twice
        importlib.reload(importlib.import_module("search_spaces.timm_entry"))
        search_spaces.timm_entry.register_resnas_net()
    assert timm.list_models(ENTRY_POINT) == [ENTRY_POINT]
    fresh = timm.create_model(ENTRY_POINT, arch_spec=nash_start_spec(widths=(4, 8, 16)).to_dict(), num_classes=5)
    assert fresh(torch.randn(1, *SIZE)).shape == (1, 5)


def resbuilder_spec():
    """A standard ResNet-18 layout with one of the paper's blocks in it: timm's own ResNet would put a ReLU
    after that block's sum, so the spec must go through the entry point."""
    spec = resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.125)
    spec = spec.replace_block(2, 1, replace(spec.stages[1].blocks[1], kind="resbuilder"))
    imagenet = resnet_spec(18, num_classes=10)
    return spec, imagenet.replace_block(1, 0, replace(imagenet.stages[0].blocks[0], kind="resbuilder"))


def test_a_spec_with_resbuilder_blocks_is_never_plain_and_reloads_through_the_entry_point(tmp_path):
    spec, imagenet_layout = resbuilder_spec()
    assert plain_timm_resnet(imagenet_layout) is None and plain_timm_resnet(spec) is None
    model = perturbed(build_model(spec))
    folder = export_to_timm(spec, model, tmp_path / "export", input_size=SIZE)
    seen = reload_in_fresh_process(tmp_path, folder, model, block_resnas=False)
    assert seen["difference"] <= 1e-6
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == ENTRY_POINT
    assert search_spaces.ArchSpec.from_dict(config["model_args"]["arch_spec"]) == spec
    loaded_spec, loaded = load_exported(folder)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert loaded_spec == spec and (loaded(x) - model(x)).abs().max() <= 1e-6
