"""timm export: reloaded logits equal the original's, plain ResNets load with bare timm in a process that
never imported resnas, everything else through the resnas_net entry point; features_only works for both."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch

from search_spaces import build_model, export_to_timm, load_exported, plain_timm_resnet, resnet_spec

REPO = Path(__file__).resolve().parents[1]


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
    spec = resnet_spec(50, num_classes=10, stem="cifar", width_multiplier=0.125)
    spec = spec.replace_block(3, 1, replace(spec.stages[2].blocks[1], kernel_size=5, activation="mish"))
    return spec.replace_block(4, 0, replace(spec.stages[3].blocks[0], activation="leaky_relu"))


def test_plain_resnet_loads_with_bare_timm_in_a_fresh_process(tmp_path):
    spec = resnet_spec(18, num_classes=10, stage_depths=(1, 2, 2, 1))
    assert plain_timm_resnet(spec) == ("resnet18", {"layers": [1, 2, 2, 1], "in_chans": 3})
    model = perturbed(build_model(spec))
    folder = export_to_timm(spec, model, tmp_path / "export", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    code = (
        "import sys, timm, torch; "
        f"m = timm.create_model('local-dir:{folder}', pretrained=True).eval(); "
        f"io = torch.load('{tmp_path / 'io.pt'}', weights_only=True); "
        "print((m(io['x']) - io['y']).abs().max().item()); "
        "print(any(name.split('.')[0] in ('search_spaces', 'strategies', 'trainers') for name in sys.modules)); "
        f"f = timm.create_model('local-dir:{folder}', pretrained=True, features_only=True); print(f.feature_info.channels())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    difference, imported_resnas, channels = result.stdout.strip().splitlines()[-3:]
    assert float(difference) <= 1e-6 and imported_resnas == "False"
    assert json.loads(channels) == [64, 64, 128, 256, 512]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["model_args"]["layers"] == [1, 2, 2, 1]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and config["pretrained_cfg"]["mean"] == [0.5] * 3


def test_searched_network_loads_through_the_resnas_entry_point_in_a_fresh_process(tmp_path):
    spec = mixed_spec()
    assert plain_timm_resnet(spec) is None
    model = perturbed(build_model(spec))
    folder = export_to_timm(spec, model, tmp_path / "export", input_size=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    code = (
        "import search_spaces, timm, torch; "
        f"m = timm.create_model('local-dir:{folder}', pretrained=True).eval(); "
        f"io = torch.load('{tmp_path / 'io.pt'}', weights_only=True); "
        "print((m(io['x']) - io['y']).abs().max().item())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-6
    assert json.loads((folder / "config.json").read_text())["architecture"] == "resnas_net"


def test_features_only_and_num_classes_override_for_the_entry_point(tmp_path):
    spec = mixed_spec()
    folder = export_to_timm(spec, build_model(spec), tmp_path / "export")
    features = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True)
    outputs = features(torch.randn(1, 3, 32, 32))
    assert features.feature_info.channels() == [8, 32, 64, 128, 256]
    assert features.feature_info.reduction() == [1, 1, 2, 4, 8]
    assert [o.shape[-1] for o in outputs] == [32, 32, 16, 8, 4]
    retargeted = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=3)
    assert retargeted(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_export_folder_holds_safetensors_and_the_spec_but_no_pickle(tmp_path):
    spec = mixed_spec()
    folder = export_to_timm(spec, build_model(spec), tmp_path / "export", extra={"test_accuracy": 0.9})
    assert sorted(p.name for p in folder.iterdir()) == ["arch_spec.json", "config.json", "model.safetensors", "resnas.json"]
    loaded_spec, _ = load_exported(folder)
    assert loaded_spec == spec


def test_a_failed_export_leaves_no_half_folder_and_keeps_the_old_one(tmp_path):
    spec = resnet_spec(18, num_classes=10)
    folder = export_to_timm(spec, build_model(spec), tmp_path / "export")
    before = (folder / "model.safetensors").read_bytes()
    other = build_model(resnet_spec(34, num_classes=10))
    with pytest.raises(RuntimeError):
        export_to_timm(spec, other, tmp_path / "export")  # weights of another architecture
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
