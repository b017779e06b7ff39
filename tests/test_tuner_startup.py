"""NNI gives a tuner process 10 s from its start to connect to the manager: creating any resnas tuner from its
config must not import torch, timm or Lightning (several seconds each on a busy 2-core machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# NNI's built-in tuners (tuner.name) are NNI's code: only configs of resnas tuners (tuner.className) start ours.
CONFIGS = [path for path in sorted((REPO / "nni_configs").glob("*.yml"))
           if "className" in yaml.safe_load(path.read_text())["tuner"]]


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


@pytest.mark.parametrize("config", ["quickstart.yml", "random_scope_m_quick.yml"])
def test_the_resnas_command_starts_without_heavy_imports(config):
    """Every `resnas` command (validate, create, resume, status, stop) pays its imports on each call: the error
    types it catches live in torch-free modules (search_spaces.errors, trainers.errors); a built-in tuner's
    settings file and searchSpace are checked from the torch-free space decisions (search_spaces.choices)."""
    code = ("import json, sys; from strategies.cli.main import main; "
            f"code = main(['validate', 'nni_configs/{config}', '--no-gpu-check']); "
            "print(json.dumps([code, sorted(m for m in ('torch', 'timm', 'pytorch_lightning') if m in sys.modules)]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [0, []], result.stderr[-2000:]
