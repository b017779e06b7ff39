"""`resnas validate` and `resnas export`: exit 0 on good input, exit 2 and one line naming the fix otherwise."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from search_spaces import build_model, resnet_spec
from strategies.cli import main
from trainers import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "nni_configs").glob("*.yml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_validates(config, capsys):
    # The paper configs ask for a GPU and CIFAR-10 files; whether this machine has them is the business of
    # tests/test_gpu_scheduling.py and tests/test_validate.py.
    assert main(["validate", "--no-gpu-check", "--no-data-check", str(config)]) == 0


def bad_config(tmp_path, **class_args):
    config = yaml.safe_load((REPO / "nni_configs" / "quickstart.yml").read_text())
    config["tuner"]["classArgs"].update(class_args)
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "class_args,expected",
    [
        ({"scope": "xl"}, "use one of s, m, l, f"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"serch_epochs": 3}, "unknown key 'serch_epochs' (did you mean 'search_epochs'?)"),
        ({"batch_size": "big"}, "batch_size='big' is not a valid int"),
    ],
)
def test_bad_trial_settings_are_one_line_and_exit_2(tmp_path, capsys, class_args, expected):
    assert main(["validate", str(bad_config(tmp_path, **class_args))]) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error and "\n" not in error


def test_validate_as_a_subprocess_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "strategies.cli", "validate", str(bad_config(tmp_path, scope="q"))],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "unknown scope 'q'" in result.stderr


def test_export_from_a_checkpoint_round_trips(tmp_path, capsys):
    spec = resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.125)
    spec = spec.replace_block(2, 1, replace(spec.stages[1].blocks[1], kernel_size=5, activation="mish"))
    model = build_model(spec).eval()
    (tmp_path / "arch.json").write_text(spec.to_json())
    save_checkpoint(tmp_path / "model.ckpt", model)
    out = tmp_path / "export"
    assert main(["export", "--spec", str(tmp_path / "arch.json"), "--weights", str(tmp_path / "model.ckpt"),
                 "--out", str(out), "--input-size", "3", "32", "32"]) == 0
    from search_spaces import load_exported

    loaded_spec, loaded = load_exported(out)
    x = torch.randn(2, 3, 32, 32)
    assert loaded_spec == spec
    assert (loaded(x) - model(x)).abs().max() <= 1e-6
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_export_refuses_weights_of_another_architecture(tmp_path, capsys):
    (tmp_path / "arch.json").write_text(resnet_spec(18, num_classes=10).to_json())
    save_checkpoint(tmp_path / "other.ckpt", build_model(resnet_spec(34, num_classes=10)))
    assert main(["export", "--spec", str(tmp_path / "arch.json"), "--weights", str(tmp_path / "other.ckpt"),
                 "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert "does not match" in error and "\n" not in error
    assert not (tmp_path / "x").exists()


def test_export_of_a_missing_spec_names_the_file(tmp_path, capsys):
    assert main(["export", "--spec", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x")]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err
