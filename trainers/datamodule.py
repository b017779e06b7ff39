"""ClassificationDataModule: a seeded train/validation split of the training set, a separate test split,
and the papers' augmentations. The test split is never used to make search decisions, and the validation
split is never reported as test (image folders: see image_folders.py for which folder is which).

data_on_device: in-memory datasets can instead keep their pixels on the GPU and make augmented batches there
(device_data.py); the split, the sample order and the augmentations' distributions stay the same."""

from __future__ import annotations

from pathlib import Path
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from .device import training_device
from .device_data import DeviceBatches
from .image_folders import CARVED_TEST_FRACTION, CARVED_TEST_SEED, folder_splits
from .datasets import (
    AUGMENTS,
    Augment,
    DataError,
    DatasetInfo,
    Normalize,
    dataset_entry,
    dataset_info,
    normalization,
    resize_images,
)
from .speed import Switch, check_switch, default_workers


def build_transform(info: DatasetInfo, image_size: int, augment: str, train: bool,
                    normalize: Normalize = "dataset") -> v2.Compose:
    """crop: random crop with 1/8 padding (CIFAR); shift: 10% translations (ResBuilder);
    resized_crop: random crop + resize (the search-scope paper); flips only where labels allow them."""
    if augment not in AUGMENTS:
        raise DataError(f"unknown augmentation {augment!r}; use one of {', '.join(AUGMENTS)}.")
    augment = info.default_augment if augment == "default" else augment
    steps: list = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]  # PIL or uint8 tensor in
    if train and augment == "crop":
        steps.append(v2.RandomCrop(image_size, padding=max(1, image_size // 8)))
    elif train and augment == "shift":
        steps.append(v2.RandomAffine(degrees=0, translate=(0.1, 0.1)))
    elif train and augment == "resized_crop":
        steps.append(v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True))
    if train and augment != "none" and info.flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(*normalization(info, normalize))]
    return v2.Compose(steps)


class TensorImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Compose):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.labels[index])


class ClassificationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        name: str,
        data_dir: str | Path = "data",
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        image_size: int | None = None,
        augment: Augment = "default",
        num_workers: int | None = 0,  # None: sized to the machine (speed.default_workers)
        download: bool = True,
        normalize: Normalize = "dataset",
        data_on_device: Switch = False,  # "auto": on when training on CUDA and the dataset is in memory
        device: torch.device | str | None = None,  # where training runs; None: training_device()
    ):
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction {val_fraction} must be between 0 and 1.")
        self.name, self.data_dir = name, Path(data_dir)
        self.info = dataset_info(name, data_dir)
        self.batch_size, self.val_fraction, self.seed = batch_size, val_fraction, seed
        self.image_size = image_size or self.info.image_size
        self.device = torch.device(device) if device is not None else training_device()
        self.num_workers = default_workers(self.device) if num_workers is None else num_workers
        self.pin_memory = self.device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
        self.augment, self.download = augment, download
        self.normalize = normalize
        self.on_device = self._resolve_on_device(data_on_device)
        self.train_set = self.val_set = self.test_set = None
        self.device_pool: dict | None = None  # data_on_device: the splits' tensors on the device (setup)
        self.test_source = ""  # where the test split comes from, for results to say
        build_transform(self.info, self.image_size, augment, train=True, normalize=normalize)  # fail now on bad names

    def _resolve_on_device(self, requested: Switch) -> bool:
        check_switch(requested, "data_on_device")
        in_memory = dataset_entry(self.name).read is not None
        if requested == "auto":
            return in_memory and self.device.type == "cuda"
        if requested and not in_memory:
            raise DataError(f"data_on_device needs an in-memory dataset and {self.name} is read from folders; "
                            f"set data_on_device to auto or false.")
        return bool(requested)

    def split_indices(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The seeded split of the training set: same seed, same indices, in every process."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val = max(1, int(round(n * self.val_fraction)))
        return order[n_val:], order[:n_val]

    def transforms(self) -> tuple[v2.Compose, v2.Compose]:
        """(augmented, plain): training batches are augmented, evaluation batches never."""
        return (build_transform(self.info, self.image_size, self.augment, train=True, normalize=self.normalize),
                build_transform(self.info, self.image_size, self.augment, train=False, normalize=self.normalize))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        read = dataset_entry(self.name).read
        if read is None:
            self._setup_folders()
            return
        augmented, plain = self.transforms()
        images, labels = read(self.info, self.data_dir, True, self.download)
        images = resize_images(images, self.image_size)
        train_indices, val_indices = self.split_indices(len(labels))
        self.train_set = Subset(TensorImages(images, labels, augmented), train_indices.tolist())
        self.val_set = Subset(TensorImages(images, labels, plain), val_indices.tolist())
        test_images, test_labels = read(self.info, self.data_dir, False, self.download)
        self.test_set = TensorImages(resize_images(test_images, self.image_size), test_labels, plain)
        self.test_source = "the dataset's test split"
        if self.on_device:  # the uint8 pixels once on the device; both splits of the pool index into one copy
            self.device_pool = {
                "train": (images.to(self.device), labels.to(self.device), train_indices, val_indices),
                "test": (self.test_set.images.to(self.device), test_labels.to(self.device)),
            }

    def _setup_folders(self) -> None:
        from torchvision.datasets import ImageFolder

        splits = folder_splits(self.data_dir)  # train/ exists: __init__'s dataset_info counted its classes
        augmented, plain = self.transforms()
        train_augmented, train_plain = (ImageFolder(str(splits.train), transform=t) for t in (augmented, plain))

        def held_out(folder: Path) -> ImageFolder:
            dataset = ImageFolder(str(folder), transform=plain)
            if dataset.classes != train_plain.classes:  # ImageFolder numbers classes by their sorted names
                raise DataError(f"{folder} has the classes {dataset.classes}, train/ has {train_plain.classes}; "
                                f"give both the same class folders.")
            return dataset

        pool = torch.arange(len(train_augmented))
        if splits.test is None:  # carve the test set first, with its own fixed seed
            order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(CARVED_TEST_SEED))
            n_test = max(1, int(round(len(pool) * CARVED_TEST_FRACTION)))
            self.test_set = Subset(train_plain, order[:n_test].tolist())
            pool = order[n_test:]
        else:
            self.test_set = held_out(splits.test)
        if splits.val is None:
            train_positions, val_positions = self.split_indices(len(pool))
            self.train_set = Subset(train_augmented, pool[train_positions].tolist())
            self.val_set = Subset(train_plain, pool[val_positions].tolist())
        else:
            self.train_set = Subset(train_augmented, pool.tolist())
            self.val_set = held_out(splits.val)
        self.test_source = splits.test_source

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def _device_batches(self, split: str) -> DeviceBatches:
        """The split's batches made on the device (device_data.py), with the DataLoader path's semantics."""
        mean, std = normalization(self.info, self.normalize)
        if split == "test":
            images, labels = self.device_pool["test"]
            return DeviceBatches(images, labels, torch.arange(len(labels)), self.batch_size, mean, std)
        images, labels, train_indices, val_indices = self.device_pool["train"]
        if split == "val":
            return DeviceBatches(images, labels, val_indices, self.batch_size, mean, std)
        augment = self.info.default_augment if self.augment == "default" else self.augment
        return DeviceBatches(images, labels, train_indices, self.batch_size, mean, std, augment=augment,
                             flip=self.info.flip and augment != "none", shuffle=True, seed=self.seed)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        self.setup()
        return self._device_batches("train") if self.on_device else self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        self.setup()
        return self._device_batches("val") if self.on_device else self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        self.setup()
        return self._device_batches("test") if self.on_device else self._loader(self.test_set, shuffle=False)


def make_datamodule(name: str, **kwargs) -> ClassificationDataModule:
    return ClassificationDataModule(name, **kwargs)
