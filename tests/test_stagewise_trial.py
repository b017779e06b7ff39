"""The stage-wise trial's pieces: the scored features (pre-ReLU residual sums, pooled), weight transfer from a
donor, and one real candidate job scored on digits."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from search_spaces.builder import build_model
from search_spaces.spec import cifar_resnet_spec
from strategies.reporting import PrintReporter
from strategies.settings import SettingsError
from strategies.stagewise.features import pooled_stage_features
from strategies.stagewise.trial import candidate_optim, extension_optim, run_stagewise_trial
from strategies.stagewise.settings import parse_stagewise_args
from trainers import load_checkpoint


@pytest.fixture
def net_and_images(one_thread_and_seeded):
    spec = cifar_resnet_spec((2, 1, 2), (4, 8, 8), num_classes=3, in_channels=1)
    model = build_model(spec, zero_init_last=False)
    images = TensorDataset(torch.randn(10, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    return spec, model, images


def test_features_are_each_stages_last_residual_sum_before_its_relu(net_and_images):
    spec, model, images = net_and_images
    cells, labels = pooled_stage_features(model, spec, images, batch_size=4, pool=1)  # every pixel kept
    outputs, x = [], images.tensors[0]
    with torch.no_grad():
        x = model.act1(model.bn1(model.conv1(x)))
        for name in model.stage_names:
            x = getattr(model, name)(x)
            outputs.append(x.flatten(1).numpy())
    for stage_cells, output in zip(cells, outputs):
        assert (stage_cells < 0).any()  # before the ReLU
        np.testing.assert_allclose(np.maximum(stage_cells, 0), output, rtol=1e-5, atol=1e-6)
    assert labels.tolist() == images.tensors[1].tolist()
    pooled, _ = pooled_stage_features(model, spec, images, batch_size=4)
    assert [stage.shape for stage in pooled] == [(10, 4), (10, 8), (10, 8)]  # global average: one per channel
    np.testing.assert_allclose(pooled[0], cells[0].reshape(10, 4, -1).mean(axis=2), rtol=1e-5, atol=1e-6)


def test_the_authors_window_pooling_keeps_the_cells(net_and_images):
    spec, model, images = net_and_images
    windows, _ = pooled_stage_features(model, spec, images, batch_size=10, limit=6, pool=8)
    # 16 px -> stage maps 16, 8, 4: 2 x 2 cells, then 1 (a window is never larger than the map)
    assert [stage.shape for stage in windows] == [(6, 4 * 4), (6, 8), (6, 8)]


def test_the_schedules_are_the_papers():
    settings = parse_stagewise_args({})
    optim = candidate_optim(settings, 200)
    assert (optim.lr, optim.momentum, optim.nesterov, optim.milestones, optim.gamma) == (0.01, 0.9, True, (100, 150), 0.1)
    assert optim.weight_decay == 1e-4 and optim.weight_decay_on == "kernels"
    assert extension_optim(settings).lr == pytest.approx(1e-4) and extension_optim(settings).schedule == "none"


DIGITS = {"dataset": "digits", "image_size": 8, "widths": [4, 8, 8], "batch_size": 64, "num_workers": 0,
          "limit_train_batches": 2, "limit_val_batches": 1, "score_samples": 100}


def candidate(tmp_path, name, depths, donor=None, role="start"):
    return {"method": "stagewise", "kind": "candidate", "role": role, "iteration": 0, "depths": depths,
            "epochs": 1, "donor": donor, "job": name, "out_dir": str(tmp_path / name), "settings": DIGITS}


def test_a_candidate_trains_scores_its_stages_and_reports_once(tmp_path, one_thread_and_seeded):
    result = run_stagewise_trial(candidate(tmp_path, "start", [1, 2, 1]), tmp_path, PrintReporter())
    assert result["depths"] == [1, 2, 1] and result["score_samples"] == 100 and len(result["stage_scores"]) == 3
    assert all(0 < score <= 1 for score in result["stage_scores"])  # mean VIP, and mean VIP^2 is 1
    assert result["params"] > 0 and result["macs"] > 0 and not result["transferred"]
    mtime = (tmp_path / "start" / "model.ckpt").stat().st_mtime_ns
    assert run_stagewise_trial(candidate(tmp_path, "start", [1, 2, 1]), tmp_path, PrintReporter()) == result
    assert (tmp_path / "start" / "model.ckpt").stat().st_mtime_ns == mtime  # idempotent: nothing retrained


def test_a_candidate_starts_from_the_donors_first_blocks(tmp_path, one_thread_and_seeded):
    donor = candidate(tmp_path, "donor", [2, 2, 2], role="donor")
    assert "stage_scores" not in run_stagewise_trial(donor, tmp_path, PrintReporter())
    donor_weights = load_checkpoint(tmp_path / "donor" / "model.ckpt")["state_dict"]
    child = candidate(tmp_path, "child", [1, 2, 1], donor=str(tmp_path / "donor" / "model.ckpt"))
    child["epochs"], child["settings"] = 1, {**DIGITS, "lr": 1e-12}  # (almost) no step: the weights stay the donor's
    assert run_stagewise_trial(child, tmp_path, PrintReporter())["transferred"]
    weights = load_checkpoint(tmp_path / "child" / "model.ckpt")["state_dict"]
    assert "layer1.1.conv1.weight" not in weights and "layer2.1.conv1.weight" in weights
    for key in ("conv1.weight", "layer1.0.conv2.weight", "layer3.0.downsample.0.weight", "fc.weight"):
        torch.testing.assert_close(weights[key], donor_weights[key], rtol=1e-6, atol=1e-9)
    too_deep = candidate(tmp_path, "deep", [3, 1, 1], donor=str(tmp_path / "donor" / "model.ckpt"))
    with pytest.raises(SettingsError, match="deeper than the donor"):
        run_stagewise_trial(too_deep, tmp_path, PrintReporter())
