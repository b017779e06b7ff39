"""`resnas export`: spec + weights to a timm folder whose logits equal the trained model's; every user
mistake ends in exit code 2 and one line naming the fix, never a traceback."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from search_spaces import build_model, load_exported, resnet_spec
from strategies.cli import main
from trainers import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def small_spec():
    spec = resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.125)
    return spec.replace_block(2, 1, replace(spec.stages[1].blocks[1], kernel_size=5, activation="mish"))


def trained_model(spec):
    """A model whose BN statistics are not the fresh ones, so the export has something to get wrong."""
    model = build_model(spec)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture
def files(tmp_path):
    spec = small_spec()
    model = trained_model(spec)
    (tmp_path / "arch.json").write_text(spec.to_json())
    save_checkpoint(tmp_path / "model.ckpt", model, arch_spec=spec, extra={"test_accuracy": 0.5})
    save_checkpoint(tmp_path / "bare.ckpt", model.state_dict())  # no ArchSpec inside
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    return tmp_path, spec, model


def export(*arguments):
    return main(["export", *map(str, arguments)])


def one_line_error(capsys):
    error = capsys.readouterr().err.strip()
    assert error.startswith("resnas export: ") and "\n" not in error and "Traceback" not in error
    return error


def assert_same_logits(folder, spec, model):
    loaded_spec, loaded = load_exported(folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded_spec == spec and (loaded(x) - model(x)).abs().max() <= 1e-6


@pytest.mark.parametrize("weights", ["model.ckpt", "bare.ckpt", "model.safetensors"])
def test_export_round_trips_checkpoints_and_safetensors(files, capsys, weights):
    tmp_path, spec, model = files
    out = tmp_path / "export"
    code = export("--spec", tmp_path / "arch.json", "--weights", tmp_path / weights, "--out", out,
                  "--input-size", 3, 32, 32, "--mean", 0.4, 0.5, 0.6, "--std", 0.2, 0.2, 0.2)
    assert code == 0
    assert f"timm.create_model('local-dir:{out}', pretrained=True)" in capsys.readouterr().out
    assert_same_logits(out, spec, model)
    config = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert config["input_size"] == [3, 32, 32] and config["mean"] == [0.4, 0.5, 0.6] and config["std"] == [0.2] * 3
    extra = json.loads((out / "resnas.json").read_text())
    assert extra["weights"] == str(tmp_path / weights)
    assert extra.get("test_accuracy") == (0.5 if weights == "model.ckpt" else None)


def test_a_checkpoint_that_carries_its_spec_needs_no_spec_file(files, capsys):
    tmp_path, spec, model = files
    assert export("--weights", tmp_path / "model.ckpt", "--out", tmp_path / "export") == 0
    assert_same_logits(tmp_path / "export", spec, model)


def test_without_weights_the_export_holds_fresh_ones(files, capsys):
    tmp_path, spec, _ = files
    assert export("--spec", tmp_path / "arch.json", "--out", tmp_path / "export") == 0
    assert "fresh weights" in capsys.readouterr().out
    loaded_spec, _ = load_exported(tmp_path / "export")
    assert loaded_spec == spec


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


@pytest.mark.parametrize(
    "make_arguments,expected",
    [
        (lambda t: ["--spec", t / "nope.json"], "nope.json does not exist; pass the arch.json"),
        (lambda t: ["--spec", write(t, "bad.json", "{not json")], "does not parse"),
        (lambda t: ["--spec", write(t, "typo.json", small_spec().to_json().replace('"max_pool"', '"maxpool"'))],
         "stem: unknown key 'maxpool'"),
        (lambda t: ["--spec", write(t, "kind.json", small_spec().to_json().replace('"basic"', '"basik"', 1))],
         "unknown block kind 'basik'"),
        (lambda t: ["--spec", write(t, "other.json", resnet_spec(34, num_classes=10, stem="cifar",
                                                               width_multiplier=0.125).to_json()),
                    "--weights", t / "bare.ckpt"],
         "bare.ckpt does not match"),
        (lambda t: ["--spec", write(t, "wide.json", resnet_spec(18, num_classes=10, stem="cifar",
                                                              width_multiplier=0.25).to_json()),
                    "--weights", t / "model.safetensors"],
         "has shape"),
        (lambda t: ["--spec", write(t, "relu.json", small_spec().to_json().replace('"mish"', '"relu"')),
                    "--weights", t / "model.ckpt"],
         "differs from the ArchSpec stored in"),  # same shapes, another function
        (lambda t: ["--spec", write(t, "r34.json", resnet_spec(34, num_classes=10, stem="cifar",
                                                             width_multiplier=0.125).to_json()),
                    "--weights", t / "model.ckpt"],
         "omit --spec to use the one stored in the checkpoint"),
        (lambda t: ["--weights", t / "bare.ckpt"], "pass --spec"),
        (lambda t: ["--spec", t / "arch.json", "--weights", t / "nope.ckpt"], "nope.ckpt does not exist"),
        (lambda t: ["--spec", t / "arch.json", "--weights", write(t, "junk.safetensors", b"\x00" * 64)],
         "is not a readable safetensors file"),
        (lambda t: ["--spec", t / "arch.json", "--weights", write(t, "junk.ckpt", b"not a checkpoint")],
         "is not a readable resnas checkpoint"),
        (lambda t: ["--spec", t / "arch.json", "--mean", "0.5"], "mean and std need 3 values"),
        (lambda t: ["--spec", t / "arch.json", "--input-size", "1", "32", "32"], "must be (3, H, W)"),
    ],
    ids=["missing-spec", "bad-json", "unknown-key", "bad-kind", "other-depth", "other-width", "spec-disagrees",
         "stored-differs", "no-spec", "missing-weights", "corrupt-safetensors", "corrupt-checkpoint", "short-mean",
         "channels"],
)
def test_user_errors_exit_2_with_one_line(files, capsys, make_arguments, expected):
    tmp_path = files[0]
    arguments = make_arguments(tmp_path)
    out = tmp_path / "export"
    assert export(*arguments, "--out", out) == 2
    assert expected in one_line_error(capsys)
    assert not out.exists()


def test_an_out_folder_of_other_files_is_left_alone(files, capsys):
    tmp_path = files[0]
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    assert export("--spec", tmp_path / "arch.json", "--out", tmp_path / "keep") == 2
    assert "not an export" in one_line_error(capsys)
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_the_module_entry_point_prints_no_traceback(files):
    tmp_path = files[0]
    result = subprocess.run(
        [sys.executable, "-m", "strategies.cli", "export", "--spec", str(tmp_path / "arch.json"),
         "--weights", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "export")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "nope.ckpt does not exist" in result.stderr
