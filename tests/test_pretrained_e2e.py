"""NASH from a pretrained timm ResNet-18 through the real NNI manager on 127.0.0.1: `resnas create --wait` with
`start: local-dir:FOLDER` (a random-weight resnet18 that save_for_hf wrote), and the first morphed child starts
where its parent is: its validation accuracy before training equals the start net's."""

import json
from pathlib import Path

import pytest

from conftest import worker_port
from strategies.multi_trial.state import STATE_FILE
from test_multi_trial_e2e import json_line, resnas, shortened
from test_timm_import import saved_timm_net


@pytest.mark.e2e
def test_nash_grows_a_pretrained_resnet18_on_the_real_manager(tmp_path):
    folder = tmp_path / "resnet18"
    saved_timm_net(folder, "resnet18")
    # One step of one child (random_walk: no retrained parent beside it), one batch, 12 px digits, a final job that
    # only tests and exports: three short trials, most of each the imports.
    config = shortened(tmp_path, "hill_climbing_quick.yml", start=f"local-dir:{folder}", pretrain_epochs=0,
                       mode="random_walk", n_steps=1, n_neighbours=1, n_morphisms=2, epochs_neighbour=1,
                       epochs_final=0, limit_train_batches=1)
    line = json_line(resnas("create", "--config", str(config), "--port", str(worker_port(8961)), "--wait",
                            "--timeout", "600"))
    assert line["status"] == "TUNER_NO_MORE_TRIAL" and all(t["status"] == "SUCCEEDED" for t in line["trials"])
    state = json.loads((tmp_path / "nni-experiments" / line["experiment"] / "checkpoint" / STATE_FILE).read_text())
    start, child = state["jobs"]["start"]["result"], state["jobs"]["step1/child0"]["result"]
    assert start["start_origin"]["source"] == f"local-dir:{folder}" and start["train_seconds"] == 0.0
    # The morphisms keep the imported network's function, so the child's predictions before training are its.
    assert child["val_accuracy_before_training"] == start["val_accuracy"]
    assert "**Started from:** timm resnet18" in (Path(line["export_dir"]) / "README.md").read_text()
