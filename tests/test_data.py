"""Data modules: digits offline, a seeded disjoint split, image folders, and one-sentence errors."""

import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainers import DATASETS, DataError, dataset_info, make_datamodule
from trainers.datamodule import build_transform
from trainers.datasets import DatasetEntry, register_dataset


def test_digits_is_real_offline_and_split_three_ways():
    dm = make_datamodule("digits", image_size=16, batch_size=32, seed=3)
    dm.setup()
    assert (len(dm.train_set) + len(dm.val_set), len(dm.test_set)) == (1438, 359)  # 1,797 images, 20% test
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 16, 16) and images.dtype == torch.float32
    assert labels.min() >= 0 and labels.max() <= 9


def test_split_is_seeded_deterministic_and_disjoint():
    first, again, other = (make_datamodule("digits", seed=s, val_fraction=0.2) for s in (7, 7, 8))
    for dm in (first, again, other):
        dm.setup()
    assert first.train_set.indices == again.train_set.indices and first.val_set.indices == again.val_set.indices
    assert set(first.train_set.indices).isdisjoint(first.val_set.indices)
    assert len(first.val_set) == round(0.2 * (len(first.train_set) + len(first.val_set)))
    assert first.val_set.indices != other.val_set.indices


def test_test_split_does_not_depend_on_the_seed():
    a, b = make_datamodule("digits", seed=1), make_datamodule("digits", seed=2)
    a.setup(), b.setup()
    assert torch.equal(a.test_set.images, b.test_set.images)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; use one of digits, cifar10"):
        make_datamodule("imagenet")


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                         ("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"),
                                         ("emnist", "EMNIST/raw")])
def test_missing_torchvision_files_name_the_expected_path(name, folder, tmp_path):
    with pytest.raises(DataError) as error:
        make_datamodule(name, data_dir=tmp_path, download=False).setup()
    assert str(tmp_path / folder) in str(error.value) and "\n" not in str(error.value)


def test_a_failed_download_offline_is_the_same_clear_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DataError, match="could not be downloaded; put the extracted archive there"):
        make_datamodule("cifar10", data_dir=tmp_path, download=True).setup()


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=6, splits=("train", "test")) -> Path:
    generator = torch.Generator().manual_seed(0)
    for split in splits:
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                pixels = (torch.rand(20, 24, 3, generator=generator) * 255 * (label + 1) / len(classes)).byte()
                Image.fromarray(pixels.numpy()).save(root / split / name / f"{index}.png")
    return root


def test_image_folder_reads_generated_pngs(tmp_path):
    root = make_image_folder(tmp_path)
    assert dataset_info("imagefolder", root).num_classes == 2
    dm = make_datamodule("imagefolder", data_dir=root, image_size=16, batch_size=4, val_fraction=0.25)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16)
    assert len(dm.train_set) + len(dm.val_set) == 12 and len(dm.test_set) == 12


def folder_of(dataset) -> set[str]:
    """The image paths a split reads (through Subsets down to the ImageFolder)."""
    indices = list(range(len(dataset)))
    while hasattr(dataset, "indices"):
        indices, dataset = [dataset.indices[i] for i in indices], dataset.dataset
    return {dataset.samples[i][0] for i in indices}


@pytest.mark.parametrize("splits, test_from, val_from", [
    (("train", "test"), "test", "train"),
    (("train", "val"), "val", "train"),  # val/ is the held-out test set, validation comes from train/
    (("train", "val", "test"), "test", "val"),
    (("train",), "train", "train"),  # a seeded part of train/ becomes the test set
])
def test_image_folder_layouts_never_test_on_the_selection_split(tmp_path, splits, test_from, val_from):
    root = make_image_folder(tmp_path, per_class=10, splits=splits)
    dm = make_datamodule("imagefolder", data_dir=root, image_size=16, batch_size=4, val_fraction=0.25, seed=3)
    dm.setup()
    train, val, test = (folder_of(s) for s in (dm.train_set, dm.val_set, dm.test_set))
    assert not (train & val) and not (train & test) and not (val & test)
    assert {Path(p).parts[-3] for p in test} == {test_from}
    assert {Path(p).parts[-3] for p in val} == {val_from}
    assert dm.test_source.startswith(f"{test_from}/" if test_from != "train" else "10% of train/")
    if splits == ("train",):
        again = make_datamodule("imagefolder", data_dir=root, image_size=16, val_fraction=0.25, seed=4)
        again.setup()
        assert folder_of(again.test_set) == test  # the carved test set does not move with the search seed


def test_held_out_folders_must_have_the_training_classes(tmp_path):
    root = make_image_folder(tmp_path, splits=("train",))
    make_image_folder(tmp_path / "other", classes=("cat", "cow"), splits=("test",))
    (tmp_path / "other" / "test").rename(root / "test")
    with pytest.raises(DataError, match="give both the same class folders"):
        make_datamodule("imagefolder", data_dir=root, image_size=16).setup()


def test_missing_image_folder_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match=r"no image folder at .*train; put one subfolder of images per class"):
        make_datamodule("imagefolder", data_dir=tmp_path)


@pytest.mark.parametrize("augment", ["crop", "shift", "resized_crop", "none", "default"])
def test_augmentations_keep_shape_and_normalise(augment):
    info = dataset_info("cifar10")
    transform = build_transform(info, 32, augment, train=True)
    out = transform(torch.full((3, 32, 32), 128, dtype=torch.uint8))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    plain = build_transform(info, 32, augment, train=False)(torch.full((3, 32, 32), 128, dtype=torch.uint8))
    expected = (128 / 255 - torch.tensor(info.mean)) / torch.tensor(info.std)
    torch.testing.assert_close(plain[:, 0, 0], expected, rtol=1e-4, atol=1e-4)


def test_digits_are_never_flipped():
    assert not dataset_info("digits").flip and not dataset_info("mnist").flip and dataset_info("cifar10").flip
    names = [type(step).__name__ for step in build_transform(dataset_info("digits"), 16, "shift", True).transforms]
    assert "RandomHorizontalFlip" not in names


def test_unknown_augmentation_is_refused():
    with pytest.raises(DataError, match="unknown augmentation 'mixup'"):
        make_datamodule("digits", augment="mixup")


def test_registering_a_duplicate_dataset_name_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DatasetEntry(DATASETS["digits"].info, None))


def test_unit_normalization_keeps_pixels_in_zero_one_and_the_export_says_so():
    from strategies.data import DataSettings, export_normalization

    dm = make_datamodule("digits", image_size=16, batch_size=64, normalize="unit")
    dm.setup()
    images, _ = next(iter(dm.train_dataloader()))
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    standardised, _ = next(iter(make_datamodule("digits", image_size=16, batch_size=64).train_dataloader()))
    assert standardised.min() < 0.0  # the default standardises with the dataset's mean and std
    assert export_normalization(DataSettings(dataset="digits", normalize="unit")) == {"mean": (0.0,), "std": (1.0,)}
    with pytest.raises(DataError, match="unknown normalize 'z'; use one of dataset, unit"):
        make_datamodule("digits", normalize="z")


def test_images_are_resized_a_chunk_at_a_time_to_the_same_pixels(monkeypatch):
    from torch.nn import functional as F

    import trainers.datasets as datasets

    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    whole = F.interpolate(images.float(), size=(20, 20), mode="bilinear", align_corners=False)
    monkeypatch.setattr(datasets, "RESIZE_CHUNK", 3)  # 4 chunks, the last one short
    resized = datasets.resize_images(images, 20)
    assert resized.dtype == torch.uint8 and torch.equal(resized, whole.round().clamp(0, 255).to(torch.uint8))
