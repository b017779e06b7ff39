"""NNI gives a tuner process 10 s from its start to connect to the manager: creating any resnas tuner from its
config must not import torch, timm or Lightning (several seconds each on a busy 2-core machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "nni_configs").glob("*.yml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_the_tuner_starts_without_heavy_imports(config, tmp_path):
    tuner = yaml.safe_load(config.read_text())["tuner"]
    module, class_name = tuner["className"].rsplit(".", 1)
    code = (
        "import importlib, json, sys, os; "
        f"os.environ['NNI_CHECKPOINT_DIRECTORY'] = {str(tmp_path)!r}; "
        f"tuner = getattr(importlib.import_module({module!r}), {class_name!r})(**json.loads({json.dumps(json.dumps(tuner['classArgs']))})); "
        "print(json.dumps(sorted(m for m in ('torch', 'timm', 'pytorch_lightning', 'torchvision') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_resnas_command_starts_without_heavy_imports():
    """Every `resnas` command (validate, create, resume, status, stop) pays its imports on each call: the error
    types it catches live in torch-free modules (search_spaces.errors, trainers.errors)."""
    code = ("import json, sys; from strategies.cli.main import main; "
            "code = main(['validate', 'nni_configs/quickstart.yml', '--no-gpu-check']); "
            "print(json.dumps([code, sorted(m for m in ('torch', 'timm', 'pytorch_lightning') if m in sys.modules)]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [0, []], result.stderr[-2000:]
