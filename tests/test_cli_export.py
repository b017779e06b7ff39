"""`resnas export`: spec + weights to a timm folder whose logits equal the trained model's; every user
mistake ends in exit code 2 and one line naming the fix, never a traceback."""

import json
import re
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


def test_dataset_fills_the_card_and_the_class_names(files, capsys):
    tmp_path, spec, _ = files
    out = tmp_path / "export"
    assert export("--weights", tmp_path / "model.ckpt", "--dataset", "cifar10", "--out", out) == 0
    names = json.loads((out / "config.json").read_text())["pretrained_cfg"]["label_names"]
    assert names[:2] == ["airplane", "automobile"] and len(names) == 10
    readme = (out / "README.md").read_text()
    assert "**Dataset:** cifar10" in readme and f"Weights: {tmp_path / 'model.ckpt'}." in readme
    assert export("--spec", tmp_path / "arch.json", "--dataset", "imagenet", "--out", out) == 2
    assert "unknown dataset 'imagenet'" in one_line_error(capsys)


# ---- export --top: one of a ProxylessNAS trial's top-k architectures ------------------------------------------
@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """One tiny scope-s trial (digits, 129 px, ResNet-50 / 16, one short epoch) keeping its top 3."""
    from strategies.reporting import PrintReporter
    from strategies.trial import run_trial
    from test_proxyless_trial import SCOPE_CONFIGS, smoke_parameters

    folder = tmp_path_factory.mktemp("proxyless")
    result = run_trial(smoke_parameters(SCOPE_CONFIGS[0], top_k=3), folder, PrintReporter())
    return folder, json.loads((folder / "top_architectures.json").read_text()), result


def supernet_on_path(folder, sample):
    """The trial's supernet with every gate pinned to `sample`'s candidate, in eval mode."""
    from search_spaces.spaces import ScopedResNet50
    from strategies.proxyless.binary_gates import install_binary_gates

    space = ScopedResNet50("s", num_classes=10, width_multiplier=1 / 16, in_channels=1)
    bank = install_binary_gates(space)
    space.load_state_dict(torch.load(folder / "supernet.ckpt", weights_only=True)["model"])
    bank.resample("weight", pinned={label: bank.candidate_values[label].index(sample[label]) for label in bank.labels})
    return space.eval()


def test_export_rank_2_holds_the_supernets_weights_for_that_path(trial, tmp_path, capsys):
    from search_spaces import ArchSpec

    folder, top, _ = trial
    out = tmp_path / "rank2"
    assert export("--top", folder, "--rank", 2, "--out", out) == 0
    assert "import search_spaces.timm_entry" in capsys.readouterr().out
    spec, loaded = load_exported(out)
    second = top["architectures"][1]
    assert spec == ArchSpec.from_dict(second["arch_spec"])
    assert spec != ArchSpec.from_dict(top["architectures"][0]["arch_spec"])
    x = torch.randn(2, 1, 129, 129, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the same function as the supernet run along that path
        assert (loaded(x) - supernet_on_path(folder, second["sample"])(x)).abs().max() <= 1e-5
    config = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert config["input_size"] == [1, 129, 129] and config["label_names"] == list("0123456789")
    readme = (out / "README.md").read_text()
    assert "rank 2 of the 3 most probable architectures" in readme and "not retrained" in readme
    assert "**Test accuracy:** not measured" in readme
    assert json.loads((out / "resnas.json").read_text())["rank"] == 2


def test_export_rank_2_retrain_trains_tests_and_exports_it(trial, tmp_path, capsys):
    from search_spaces import ArchSpec

    folder, top, _ = trial
    out = tmp_path / "rank2"
    assert export("--top", folder / "top_architectures.json", "--rank", 2, "--retrain", "--out", out) == 0
    assert "rank 2: val accuracy" in capsys.readouterr().out
    spec, _ = load_exported(out)
    assert spec == ArchSpec.from_dict(top["architectures"][1]["arch_spec"])
    readme = (out / "README.md").read_text()
    assert "Retrained from scratch" in readme and re.search(r"\*\*Test accuracy:\*\* \d+\.\d\d% on ", readme)
    assert (folder / "retrain_rank2.ckpt").is_file()


def test_export_rank_1_with_the_trials_checkpoint_is_the_trials_own_export(trial, tmp_path, capsys):
    folder, _, _ = trial
    assert export("--top", folder, "--weights", folder / "retrain.ckpt", "--out", tmp_path / "rank1") == 0
    _, ours = load_exported(tmp_path / "rank1")
    _, trials = load_exported(folder / "timm_export")
    x = torch.randn(2, 1, 129, 129)
    with torch.no_grad():
        assert torch.equal(ours(x), trials(x))
    assert export("--top", folder, "--rank", 2, "--weights", folder / "retrain.ckpt", "--out", tmp_path / "r2") == 2
    assert "retrain.ckpt" in one_line_error(capsys)  # trained for rank 1, not for rank 2


@pytest.mark.parametrize(
    "make_arguments,expected",
    [
        (lambda f: ["--top", f, "--rank", 4], "lists ranks 1 to 3; pass --rank between them"),
        (lambda f: ["--top", f, "--rank", 0], "lists ranks 1 to 3"),
        (lambda f: ["--rank", 2, "--spec", f / "arch.json"], "pass --top TRIAL_DIR with them"),
        (lambda f: ["--top", f, "--spec", f / "arch.json"], "drop --spec"),
        (lambda f: ["--top", f, "--retrain", "--weights", f / "retrain.ckpt"], "drop --weights"),
        (lambda f: ["--top", f, "--retrain", "--mean", 0.5], "drop --mean"),
        (lambda f: ["--top", f / "timm_export"], "does not exist; pass the output folder of a ProxylessNAS trial"),
        (lambda f: ["--top", f / "gates.json"], "is not a resnas top-architectures file"),
        (lambda f: ["--top", f, "--dataset", "cifar10"], "the trial ran on digits, not cifar10"),
    ],
    ids=["rank-too-high", "rank-zero", "rank-without-top", "top-and-spec", "retrain-and-weights", "retrain-and-mean",
         "no-top-file", "foreign-json", "other-dataset"],
)
def test_export_top_mistakes_exit_2_with_one_line(trial, tmp_path, capsys, make_arguments, expected):
    folder, _, _ = trial
    out = tmp_path / "export"
    assert export(*make_arguments(folder), "--out", out) == 2
    assert expected in one_line_error(capsys)
    assert not out.exists()
