"""Fast training (issue 11, item 4): precision and memory format resolved once with the fix named, batches
made on the device with the DataLoader path's split, order and augmentation statistics, Lightning and the
supernet loop taking them, and settings added without restarting searches made before them.

No timings here (benchmarks/train_throughput.py measures speed); these are the contracts speed must keep."""

import json
import math

import pytest
import torch
import yaml
from torch import nn

from search_spaces import ScopedResNet50, build_model, resnet_spec
from strategies.data import DataSettings, make_job_datamodule, settings_match
from strategies.layer_pruning.tuner import LayerPruningTuner
from strategies.multi_trial.state import STATE_FILE
from strategies.proxyless import ProxylessSearchConfig
from strategies.proxyless.search import ProxylessSearch
from strategies.settings import SettingsError, parse_settings
from trainers import OptimConfig, TrainingDivergedError, evaluate, fit, make_datamodule
from trainers.datamodule import build_transform
from trainers.datasets import DatasetInfo
from trainers.device_data import DeviceBatches, augment_batch
from trainers.speed import SpeedError, default_workers, resolve_channels_last, resolve_precision
from trainers.system import EpochMeans

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


# ---- precision and memory format ----------------------------------------------------------------------------
def test_auto_precision_is_32_on_the_cpu_and_bf16_or_fp16_on_cuda(monkeypatch):
    assert resolve_precision("auto", "cpu") == "32" and resolve_precision("32", "cpu") == "32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("auto", "cuda") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("auto", "cuda") == "16-mixed"
    assert resolve_precision("bf16-mixed", "cuda") == "bf16-mixed"  # explicit wishes are kept where possible


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_without_a_gpu_is_one_sentence_naming_the_fix(precision):
    with pytest.raises(SpeedError) as error:
        resolve_precision(precision, "cpu")
    message = str(error.value)
    assert f"precision {precision} needs a CUDA GPU" in message and "set precision to auto or 32" in message
    assert message.count(". ") == 0 and "\n" not in message
    with pytest.raises(SpeedError, match="unknown precision 'fp8'; use one of auto, 32, bf16-mixed, 16-mixed"):
        resolve_precision("fp8", "cpu")


def test_channels_last_auto_follows_the_device_and_precision():
    assert resolve_channels_last("auto", "cpu", "32") is False
    assert resolve_channels_last("auto", "cuda", "bf16-mixed") is True
    assert resolve_channels_last("auto", "cuda", "32") is False
    assert resolve_channels_last(True, "cpu", "32") is True
    with pytest.raises(SpeedError, match="channels_last='yes' is not valid; use auto, true or false"):
        resolve_channels_last("yes", "cpu", "32")


def test_fit_refuses_mixed_precision_on_the_cpu_before_touching_anything(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"earlier result")
    datamodule = make_datamodule("digits", image_size=16, batch_size=64)
    with pytest.raises(SpeedError, match="needs a CUDA GPU"):
        fit(nn.Linear(1, 1), datamodule, OptimConfig(), epochs=1, precision="bf16-mixed", checkpoint_path=checkpoint)
    assert checkpoint.read_bytes() == b"earlier result"


def tiny_digits_net() -> nn.Module:
    return build_model(resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.125, in_channels=1,
                                   stage_depths=(1, 1)))


def test_channels_last_fit_trains_and_hands_back_contiguous_weights(one_thread_and_seeded):
    model = tiny_digits_net()
    datamodule = make_datamodule("digits", image_size=16, batch_size=64)
    result = fit(model, datamodule, OptimConfig(optimizer="adam", lr=3e-3), epochs=1, channels_last=True,
                 limit_train_batches=4, limit_val_batches=2)
    assert result.epochs == 1 and math.isfinite(result.final_train_loss) and 0 <= result.final_val_accuracy <= 1
    assert all(parameter.is_contiguous() for parameter in model.parameters())  # safetensors exports need it


def test_channels_last_changes_no_supernet_step_beyond_rounding(one_thread_and_seeded):
    losses = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        space = ScopedResNet50("s", width_multiplier=1 / 16, stem="cifar", num_classes=10)
        search = ProxylessSearch(space, ProxylessSearchConfig(input_size=(3, 16, 16), channels_last=channels_last))
        generator = torch.Generator().manual_seed(1)
        images, labels = torch.randn(4, 3, 16, 16, generator=generator), torch.randint(0, 10, (4,), generator=generator)
        steps = [search.weight_step(images, labels), search.weight_step(images, labels), search.arch_step(images, labels)]
        losses.append([float(loss) for loss in steps])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_the_supernet_refuses_mixed_precision_on_the_cpu():
    space = ScopedResNet50("s", width_multiplier=1 / 16, stem="cifar", num_classes=10)
    with pytest.raises(SpeedError, match="precision 16-mixed needs a CUDA GPU"):
        ProxylessSearch(space, ProxylessSearchConfig(input_size=(3, 16, 16), precision="16-mixed"))


# ---- training loop bookkeeping --------------------------------------------------------------------------------
def test_epoch_means_weight_batches_by_their_size_like_lightning():
    means = EpochMeans(["loss"])
    means.add([torch.tensor(1.0)], 3)
    means.add([torch.tensor(4.0)], 1)
    assert float(means.means()["loss"]) == pytest.approx(7 / 4)


class NanAfter(nn.Module):
    """Finite for `steps` training forwards, NaN after: divergence checked in groups still names the step."""

    def __init__(self, steps: int):
        super().__init__()
        self.fc, self.steps, self.calls = nn.Linear(256, 10), steps, 0

    def forward(self, x):
        self.calls += self.training
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training and self.calls > self.steps else out


def test_a_loss_that_diverges_later_names_its_own_step(one_thread_and_seeded):
    datamodule = make_datamodule("digits", image_size=16, batch_size=64)
    with pytest.raises(TrainingDivergedError, match=r"became nan at epoch 0 step 3; lower the learning rate"):
        fit(NanAfter(3), datamodule, OptimConfig(), epochs=1)


# ---- DataLoader sizing ------------------------------------------------------------------------------------------
def test_unset_workers_are_sized_to_the_machine_and_explicit_ones_kept(monkeypatch):
    import trainers.speed as speed

    monkeypatch.setattr(speed, "available_cpus", lambda: 16)
    assert default_workers("cuda") == 8 and default_workers("cpu") == 0
    monkeypatch.setattr(speed, "available_cpus", lambda: 3)
    assert default_workers("cuda") == 2
    gpu = make_datamodule("digits", num_workers=None, device="cuda")  # nothing touches the GPU before loading
    assert (gpu.num_workers, gpu.pin_memory) == (2, True)
    explicit = make_datamodule("digits", num_workers=5, device="cuda")
    assert explicit.num_workers == 5
    cpu = make_datamodule("digits", num_workers=None, device="cpu")
    assert (cpu.num_workers, cpu.pin_memory) == (0, False)


# ---- device-resident batches ------------------------------------------------------------------------------------
def digits_pair(augment: str = "default", batch_size: int = 64):
    loader = make_datamodule("digits", image_size=16, batch_size=batch_size, augment=augment, seed=3)
    device = make_datamodule("digits", image_size=16, batch_size=batch_size, augment=augment, seed=3,
                             data_on_device=True, device="cpu")
    loader.setup(), device.setup()
    return loader, device


def test_device_batches_keep_the_split_and_the_sample_order(one_thread_and_seeded):
    loader, device = digits_pair()
    assert isinstance(device.train_dataloader(), DeviceBatches) and device.on_device
    train_indices, val_indices = device.device_pool["train"][2:]
    assert train_indices.tolist() == loader.train_set.indices and val_indices.tolist() == loader.val_set.indices
    for epoch in range(2):  # the same permutation every epoch, the generator advancing alike
        for (_, a), (_, b) in zip(loader.train_dataloader(), device.train_dataloader(), strict=True):
            assert torch.equal(a, b), epoch
    for split in ("val_dataloader", "test_dataloader"):  # evaluation batches: identical, up to float rounding
        for (x, a), (y, b) in zip(getattr(loader, split)(), getattr(device, split)(), strict=True):
            assert torch.equal(a, b)
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    assert len(device.train_dataloader()) == len(loader.train_dataloader())


def channel_stats(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([x for x, _ in batches])
    return images.mean((0, 2, 3)), images.std((0, 2, 3))


@pytest.mark.parametrize("augment", ["shift", "crop", "resized_crop", "none"])
def test_device_batches_have_the_dataloader_paths_pixel_statistics(augment, one_thread_and_seeded):
    loader, device = digits_pair(augment)
    epochs = 3  # ~3,900 augmented images per path
    cpu_mean, cpu_std = channel_stats([b for _ in range(epochs) for b in loader.train_dataloader()])
    dev_mean, dev_std = channel_stats([b for _ in range(epochs) for b in device.train_dataloader()])
    torch.testing.assert_close(dev_mean, cpu_mean, atol=0.02, rtol=0)
    torch.testing.assert_close(dev_std, cpu_std, atol=0.02, rtol=0)


# A marker image: one bright pixel with a dimmer right neighbour, so an output shows where the content went
# (the bright pixel) and whether it was mirrored (which side the dim one is on).
MARKER_INFO = DatasetInfo("markers", 2, 3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), True, "crop", "")
MARK_ROW, MARK_COL = 14, 13


def markers(n: int) -> torch.Tensor:
    images = torch.zeros((n, 3, 32, 32), dtype=torch.uint8)
    images[:, :, MARK_ROW, MARK_COL] = 250
    images[:, :, MARK_ROW, MARK_COL + 1] = 120
    return images


def displacements(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dx, flipped) of each image's marker, the flip undone first (crops and shifts are symmetric)."""
    plane = batch[:, 0].float()
    width = plane.shape[-1]
    flat = plane.flatten(1).argmax(1)
    rows, cols = flat // width, flat % width
    everyone = torch.arange(len(plane))
    left = plane[everyone, rows, (cols - 1).clamp(min=0)]
    right = plane[everyone, rows, (cols + 1).clamp(max=width - 1)]
    flipped = left > right  # the dim pixel is right of the bright one unless mirrored
    cols = torch.where(flipped, width - 1 - cols, cols)
    return rows - MARK_ROW, cols - MARK_COL, flipped


def histogram(values: torch.Tensor, low: int, high: int) -> torch.Tensor:
    return torch.bincount(values - low, minlength=high - low + 1).float() / len(values)


@pytest.mark.parametrize("augment,limit", [("crop", 4), ("shift", 3)])
def test_shifts_crops_and_flips_are_distributed_as_the_dataloader_paths(augment, limit, one_thread_and_seeded):
    n = 3000
    transform = build_transform(MARKER_INFO, 32, augment, train=True)
    cpu = torch.stack([transform(image) for image in markers(n)])
    device = augment_batch(markers(n), augment, flip=True, generator=torch.Generator().manual_seed(0))
    measured = {}
    for name, batch in (("cpu", cpu), ("device", device)):
        dy, dx, flipped = displacements(batch)
        assert dy.abs().max() <= limit and dx.abs().max() <= limit, name
        measured[name] = (histogram(dy, -limit, limit), histogram(dx, -limit, limit), flipped.float().mean())
    for axis in (0, 1):  # total variation distance between the two paths' shift distributions
        assert 0.5 * (measured["cpu"][axis] - measured["device"][axis]).abs().sum() < 0.06, axis
    assert abs(measured["device"][2] - 0.5) < 0.04 and abs(measured["cpu"][2] - 0.5) < 0.04
    if augment == "crop":  # RandomCrop(pad 4): offsets uniform over 9 values
        assert measured["device"][1] == pytest.approx(torch.full((9,), 1 / 9), abs=0.03)


def test_no_augmentation_means_no_flip_either():
    images = markers(64)
    out = augment_batch(images, "none", flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, images)
    with pytest.raises(ValueError, match="unknown device augmentation 'mixup'"):
        augment_batch(images, "mixup", flip=False, generator=torch.Generator())


def test_device_batches_are_seeded(one_thread_and_seeded):
    first, again = (make_datamodule("digits", image_size=16, batch_size=32, data_on_device=True, device="cpu",
                                    seed=5) for _ in range(2))
    for a, b in zip(first.train_dataloader(), again.train_dataloader(), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_lightning_and_evaluate_take_device_batches(one_thread_and_seeded):
    datamodule = make_datamodule("digits", image_size=16, batch_size=64, data_on_device=True, device="cpu")
    model = tiny_digits_net()
    result = fit(model, datamodule, OptimConfig(optimizer="adam", lr=3e-3), epochs=2, limit_train_batches=6,
                 limit_val_batches=3)
    assert [h["epoch"] for h in result.history] == [1, 2] and math.isfinite(result.final_val_loss)
    assert 0 <= evaluate(model, datamodule, "test")["accuracy"] <= 1


def test_data_on_device_auto_is_off_without_cuda_and_true_needs_an_in_memory_dataset(tmp_path):
    from trainers import DataError

    assert not make_datamodule("digits", data_on_device="auto", device="cpu").on_device
    assert make_datamodule("digits", data_on_device="auto", device="cuda").on_device  # resolved, not yet loaded
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir()
    with pytest.raises(DataError, match="data_on_device needs an in-memory dataset.*set data_on_device to auto or false"):
        make_datamodule("imagefolder", data_dir=tmp_path, data_on_device=True, device="cpu")


# ---- settings ---------------------------------------------------------------------------------------------------
def test_speed_settings_parse_and_reach_the_data_module():
    settings = parse_settings(DataSettings, {"dataset": "digits", "precision": "32", "channels_last": True,
                                             "data_on_device": False, "num_workers": 0}, "test")
    assert (settings.precision, settings.channels_last, settings.data_on_device) == ("32", True, False)
    default = DataSettings(dataset="digits", image_size=16)
    assert (default.precision, default.channels_last, default.data_on_device, default.num_workers) == \
        ("auto", "auto", "auto", None)
    datamodule = make_job_datamodule(DataSettings(dataset="digits", image_size=16, data_on_device=True))
    assert datamodule.on_device and datamodule.num_workers == default_workers(datamodule.device)


@pytest.mark.parametrize("changes,message", [
    ({"precision": "fp16"}, "precision='fp16' is not a valid one of 'auto', '32', 'bf16-mixed', '16-mixed'"),
    ({"data_on_device": "yes"}, "data_on_device='yes' is not a valid"),
    ({"num_workers": -1}, "num_workers must be at least 0"),
    ({"dataset": "imagefolder", "data_on_device": True}, "data_on_device needs an in-memory dataset"),
])
def test_bad_speed_settings_are_refused_with_the_fix(changes, message):
    with pytest.raises(SettingsError, match=message):
        parse_settings(DataSettings, changes, "test")


def test_settings_saved_before_the_new_keys_still_match():
    current = DataSettings(dataset="digits")
    saved = json.loads(json.dumps(current.to_dict()))
    for key in ("precision", "channels_last", "data_on_device"):
        del saved[key]
    saved["num_workers"] = 2  # the former default
    assert settings_match(saved, current)
    assert not settings_match(saved, DataSettings(dataset="digits", precision="32"))  # a new key set on purpose
    assert not settings_match({**saved, "batch_size": 32}, current)  # any other difference
    assert not settings_match({**saved, "num_workers": 3}, current)
    assert not settings_match({**saved, "removed_setting": 1}, current)
    assert settings_match(json.loads(json.dumps(current.to_dict())), current)


def test_a_search_made_before_the_speed_settings_resumes_instead_of_restarting(tmp_path):
    class_args = yaml.safe_load((REPO / "nni_configs" / "layer_pruning_quick.yml").read_text())["tuner"]["classArgs"]
    class_args = {key: value for key, value in class_args.items() if key != "num_workers"}  # left at its default
    tuner = LayerPruningTuner(state_dir=str(tmp_path), **class_args)
    issued = tuner.generate_parameters(0)
    state_path = tmp_path / STATE_FILE
    old = json.loads(state_path.read_text())  # as an older release wrote it: no speed keys, num_workers 2
    for key in ("precision", "channels_last", "data_on_device"):
        del old["settings"][key]
    old["settings"]["num_workers"] = 2
    state_path.write_text(json.dumps(old))
    resumed = LayerPruningTuner(state_dir=str(tmp_path), **class_args)
    assert not (tmp_path / "layer_pruning.previous-1").exists()
    assert resumed.jobs[issued["job"]]["params"] == issued  # the same search, its job re-issued as before
    assert resumed.state["settings"]["precision"] == "auto"  # written out with the new keys from now on
    changed = LayerPruningTuner(state_dir=str(tmp_path), **{**class_args, "precision": "32"})
    assert (tmp_path / "layer_pruning.previous-1").exists() and changed.state["settings"]["precision"] == "32"
