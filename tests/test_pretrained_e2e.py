"""Pretrained timm ResNet-18 starts through the real NNI manager on 127.0.0.1 (`resnas create --wait`; a
random-weight resnet18 that save_for_hf wrote, read as `local-dir:FOLDER`): NASH's first morphed child starts where
its parent is (its validation accuracy before training equals the start net's), and stage-wise grows the donor's
own network."""

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


@pytest.mark.e2e
def test_stagewise_grows_a_pretrained_resnet18_donor_on_the_real_manager(tmp_path):
    folder = tmp_path / "resnet18"
    saved_timm_net(folder, "resnet18")
    # The donor's own network cut to one block a stage, grown once to the donor's two; one batch per epoch at 32 px
    # (the 7x7/2 stem and max pool leave stage 4 at 1x1).
    config = shortened(tmp_path, "stagewise_quick.yml", donor=f"local-dir:{folder}", start_depths=[1, 1, 1, 1],
                       iterations=1, epochs=1, extra_epochs=0, image_size=32, limit_train_batches=1,
                       limit_val_batches=1, score_samples=40, batch_size=32)
    line = json_line(resnas("create", "--config", str(config), "--port", str(worker_port(8962)), "--wait",
                            "--timeout", "600"))
    assert line["status"] == "TUNER_NO_MORE_TRIAL" and all(t["status"] == "SUCCEEDED" for t in line["trials"])
    assert line["best"]["iterations"][0]["depths"] == [1, 1, 1, 1]
    record = json.loads((Path(line["export_dir"]) / "resnas.json").read_text())
    assert record["provenance"]["start_network"]["source"] == f"local-dir:{folder}"
