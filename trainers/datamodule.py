"""ClassificationDataModule: a seeded train/validation split of the training set, a separate test split,
and the papers' augmentations. The test split is never used to make search decisions."""

from __future__ import annotations

from pathlib import Path
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from .datasets import AUGMENTS, Augment, DataError, DatasetInfo, dataset_entry, dataset_info, resize_images



def build_transform(info: DatasetInfo, image_size: int, augment: str, train: bool) -> v2.Compose:
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
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
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
        num_workers: int = 0,
        download: bool = True,
    ):
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction {val_fraction} must be between 0 and 1.")
        self.name, self.data_dir = name, Path(data_dir)
        self.info = dataset_info(name, data_dir)
        self.batch_size, self.val_fraction, self.seed = batch_size, val_fraction, seed
        self.image_size = image_size or self.info.image_size
        self.augment, self.num_workers, self.download = augment, num_workers, download
        self.train_set = self.val_set = self.test_set = None
        build_transform(self.info, self.image_size, augment, train=True)  # fail now on a bad augment name

    def split_indices(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The seeded split of the training set: same seed, same indices, in every process."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val = max(1, int(round(n * self.val_fraction)))
        return order[n_val:], order[:n_val]

    def _sets(self, train: bool) -> tuple[Dataset, Dataset]:
        """(augmented, plain) views of one split."""
        augmented = build_transform(self.info, self.image_size, self.augment, train=True)
        plain = build_transform(self.info, self.image_size, self.augment, train=False)
        entry = dataset_entry(self.name)
        if entry.read is None:
            return self._folder_sets(train, augmented, plain)
        images, labels = entry.read(self.info, self.data_dir, train, self.download)
        images = resize_images(images, self.image_size)
        return TensorImages(images, labels, augmented), TensorImages(images, labels, plain)

    def _folder_sets(self, train: bool, augmented, plain) -> tuple[Dataset, Dataset]:
        from torchvision.datasets import ImageFolder

        folder = self.data_dir / ("train" if train else "test")
        if not folder.is_dir():
            raise DataError(f"no image folder at {folder}; put one subfolder of images per class under it.")
        return ImageFolder(str(folder), transform=augmented), ImageFolder(str(folder), transform=plain)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        augmented, plain = self._sets(train=True)
        train_indices, val_indices = self.split_indices(len(augmented))
        self.train_set = Subset(augmented, train_indices.tolist())
        self.val_set = Subset(plain, val_indices.tolist())
        try:
            self.test_set = self._sets(train=False)[1]
        except DataError:
            if dataset_entry(self.name).read is not None:
                raise
            self.test_set = None  # an image folder without test/: evaluation falls back to validation

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set if self.test_set is not None else self.val_set, shuffle=False)


def make_datamodule(name: str, **kwargs) -> ClassificationDataModule:
    return ClassificationDataModule(name, **kwargs)
