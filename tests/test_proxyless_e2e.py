"""ProxylessNAS through the real NNI manager on 127.0.0.1: `resnas create --wait` with a shortened quickstart."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import worker_port

REPO = Path(__file__).resolve().parents[1]


def short_quickstart(tmp_path: Path) -> Path:
    config = yaml.safe_load((REPO / "nni_configs" / "quickstart.yml").read_text())
    config["trialCodeDirectory"] = str(REPO)
    config["tuner"]["codeDirectory"] = str(REPO)
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    config["tuner"]["classArgs"].update(search_epochs=2, retrain_epochs=1, limit_train_batches=4,
                                         image_size=33)  # the smallest size whose scope-m kernel choices are real
    path = tmp_path / "quickstart_short.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.e2e
def test_quickstart_runs_on_the_real_manager_and_exports_a_timm_folder(tmp_path):
    command = [sys.executable, "-m", "strategies.cli", "create", "--config", str(short_quickstart(tmp_path)),
               "--port", str(worker_port(8781)), "--wait", "--timeout", "600"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["status"] == "DONE" and line["dashboard"].startswith("http://127.0.0.1:")  # its port unless taken
    assert [trial["status"] for trial in line["trials"]] == ["SUCCEEDED"]
    best = line["best"]
    assert 0.0 <= best["default"] <= 1.0 and best["default"] == best["test_accuracy"]
    assert best["params"] > 0 and best["flops"] > 0 and best["search_seconds"] > 0
    assert len(best["architecture"]) == 18  # scope m: 9 blocks x (kernel, activation)

    trial_dir = Path(line["export_dir"]).parent
    for name in ("arch.json", "gates.json", "gates.png", "supernet.ckpt", "retrain.ckpt"):
        assert (trial_dir / name).is_file(), name
    gates = json.loads((trial_dir / "gates.json").read_text())
    assert len(gates["epochs"]) == 2 and set(gates["candidates"]) == set(best["architecture"])

    # The export loads in a fresh process through timm (the CIFAR stem needs resnas' entry point).
    code = (
        "import search_spaces.timm_entry, timm, torch, json, sys; "
        f"m = timm.create_model('local-dir:{line['export_dir']}', pretrained=True).eval(); "
        "print(json.dumps(list(m(torch.zeros(1, 1, 12, 12)).shape)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == [1, 10]
