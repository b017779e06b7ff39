"""The dataset registry: static facts per dataset and how to read its train/test images.

In-memory datasets (digits, CIFAR, MNIST family) are held as uint8 tensors N x C x H x W; folders of images
are read lazily. Nothing here decides a split or applies an augmentation (see datamodule.py); the augmentation
names live here so that settings (torch-free) and the data module read one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, get_args

if TYPE_CHECKING:  # torch is imported where images are read: validating a config (NNI's tuner process) needs none
    import torch


# default: the dataset's own (DatasetInfo.default_augment); crop: pad-4 random crops; shift: 10% random shifts;
# resized_crop: random crops resized to the input size. Horizontal flips come with each where labels allow.
Augment = Literal["default", "none", "crop", "shift", "resized_crop"]
AUGMENTS: tuple[str, ...] = get_args(Augment)


# dataset: standardise with the dataset's mean and std; unit: pixels scaled to [0, 1] and nothing more
# (ResBuilder's MNIST family). An export records the same mean/std, so timm feeds the model what it trained on.
Normalize = Literal["dataset", "unit"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalize)


class DataError(ValueError):
    """Data that cannot be read; the message is one sentence naming the path or the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips are label-preserving (not for digits and letters)
    default_augment: Augment
    expected_path: str  # where the files must be, relative to data_dir ("" when shipped)
    # Class index -> name, what an export's pretrained_cfg.label_names carries; an image folder's come from
    # its folder names (dataset_info counts them), so the registry's entry has none.
    class_names: tuple[str, ...] = ()


ImagesAndLabels = tuple["torch.Tensor", "torch.Tensor"]  # uint8 N x C x H x W, int64 N
Reader = Callable[[DatasetInfo, Path, bool, bool], ImagesAndLabels]  # (info, data_dir, train, download)


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo
    read: Reader | None  # None: read lazily from a folder (imagefolder)


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> None:
    if entry.info.name in DATASETS:
        raise ValueError(f"dataset {entry.info.name!r} is already registered; pick another name.")
    DATASETS[entry.info.name] = entry


def dataset_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}.")
    return DATASETS[name]


# ---- digits: scikit-learn's shipped 8x8 digits (real, offline) ---------------------------------------------
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the test part must never depend on a run's seed


def read_digits(info: DatasetInfo, data_dir: Path, train: bool, download: bool) -> ImagesAndLabels:
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = int(len(labels) * DIGITS_TEST_FRACTION)
    chosen = order[n_test:] if train else order[:n_test]
    return images[chosen], labels[chosen]


# ---- torchvision datasets ---------------------------------------------------------------------------------
def _torchvision_reader(class_name: str, title: str, **kwargs) -> Reader:
    def read(info: DatasetInfo, data_dir: Path, train: bool, download: bool) -> ImagesAndLabels:
        import torch
        import torchvision

        try:
            dataset = getattr(torchvision.datasets, class_name)(str(data_dir), train=train, download=download, **kwargs)
        except Exception:  # noqa: BLE001 - missing files and failed downloads raise many types
            where = Path(data_dir) / info.expected_path
            tail = "could not be downloaded" if download else "download=False"
            raise DataError(
                f"{title} files not found under {where} and {tail}; put the extracted archive there "
                f"or run once with network access."
            ) from None
        images = torch.as_tensor(dataset.data)
        images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)
        return images.contiguous().to(torch.uint8), torch.as_tensor(dataset.targets).long()

    return read


def _info(name, classes, channels, size, mean, std, flip, augment, path) -> DatasetInfo:
    names = CLASS_NAMES.get(name, ())
    if names and len(names) != classes:
        raise ValueError(f"{name} lists {len(names)} class names for {classes} classes; fix CLASS_NAMES.")
    return DatasetInfo(name, classes, channels, size, mean, std, flip, augment, path, names)


# Class names in label order, as torchvision's datasets number them, written out so that reading them needs
# neither torch nor the files (CIFAR's names live in its archive's meta file). MNIST's are the bare digits
# ("0", not torchvision's "0 - zero"), as for scikit-learn's digits.
_DIGITS = tuple("0123456789")
_EMNIST_MERGED = set("cijklmopsuvwxyz")  # lower-case letters the balanced split merges into their capitals
_EMNIST_BYCLASS = tuple(sorted("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": _DIGITS,
    "mnist": _DIGITS,
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple(
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
        "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
        "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
        "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
        "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
        "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
        "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman "
        "worm".split()
    ),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "emnist": tuple(name for name in _EMNIST_BYCLASS if name not in _EMNIST_MERGED),
    "emnist_byclass": _EMNIST_BYCLASS,
}


for _entry in (
    DatasetEntry(_info("digits", 10, 1, 32, (0.3053,), (0.3759,), False, "shift", ""), read_digits),
    DatasetEntry(
        _info("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, "crop",
              "cifar-10-batches-py"),
        _torchvision_reader("CIFAR10", "CIFAR-10"),
    ),
    DatasetEntry(
        _info("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, "crop",
              "cifar-100-python"),
        _torchvision_reader("CIFAR100", "CIFAR-100"),
    ),
    DatasetEntry(_info("mnist", 10, 1, 28, (0.1307,), (0.3081,), False, "shift", "MNIST/raw"),
                 _torchvision_reader("MNIST", "MNIST")),
    DatasetEntry(_info("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), False, "shift", "FashionMNIST/raw"),
                 _torchvision_reader("FashionMNIST", "FashionMNIST")),
    DatasetEntry(_info("emnist", 47, 1, 28, (0.1751,), (0.3332,), False, "shift", "EMNIST/raw"),
                 _torchvision_reader("EMNIST", "EMNIST", split="balanced")),
    # ResBuilder's EMNIST (62 classes: digits, upper- and lower-case letters; the authors' tfds "emnist" default).
    # `emnist` stays the balanced split so existing configs keep their meaning. Mean/std: the balanced split's
    # (byclass's could not be measured offline; the paper scales MNIST-family pixels to [0, 1], no standardising).
    DatasetEntry(_info("emnist_byclass", 62, 1, 28, (0.1751,), (0.3332,), False, "shift", "EMNIST/raw"),
                 _torchvision_reader("EMNIST", "EMNIST", split="byclass")),
    # Any folder of class subfolders (Animals10, a company's own images); the facts depend on the folder.
    DatasetEntry(_info("imagefolder", 0, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, "shift",
                       "train/<class>/*.jpg"), None),
):
    register_dataset(_entry)


def imagefolder_classes(data_dir: Path) -> list[str]:
    train = Path(data_dir) / "train"
    if not train.is_dir():
        raise DataError(f"no image folder at {train}; put one subfolder of images per class under it.")
    classes = sorted(entry.name for entry in train.iterdir() if entry.is_dir())
    if len(classes) < 2:
        raise DataError(f"{train} has {len(classes)} class folders; an image folder needs at least two.")
    return classes


def normalization(info: DatasetInfo, normalize: Normalize = "dataset") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) that images are standardised with after scaling to [0, 1]."""
    if normalize not in NORMALIZATIONS:
        raise DataError(f"unknown normalize {normalize!r}; use one of {', '.join(NORMALIZATIONS)}.")
    if normalize == "unit":
        return (0.0,) * info.in_channels, (1.0,) * info.in_channels
    return info.mean, info.std


def dataset_info(name: str, data_dir: str | Path = "data") -> DatasetInfo:
    """Static facts of a dataset (image folders: counted from the folder, without reading images)."""
    info = dataset_entry(name).info
    if name == "imagefolder":
        from dataclasses import replace

        classes = imagefolder_classes(Path(data_dir))  # ImageFolder numbers classes by their sorted names too
        info = replace(info, num_classes=len(classes), class_names=tuple(classes))
    return info


RESIZE_CHUNK = 1024  # images resized at a time: CIFAR-10 at 224 px in one float batch would take 30 GB


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 N x C x H x W batch once, up front (digits: 8 px -> size), a chunk at a time into one uint8
    tensor, so the peak memory is the result (7.5 GB for CIFAR-10's training set at 224 px), not its float copy."""
    import torch
    from torch.nn import functional as F

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = torch.empty((*images.shape[:-2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), RESIZE_CHUNK):
        chunk = F.interpolate(images[start:start + RESIZE_CHUNK].float(), size=(size, size), mode="bilinear",
                              align_corners=False)
        resized[start:start + RESIZE_CHUNK] = chunk.round().clamp(0, 255).to(torch.uint8)
    return resized
