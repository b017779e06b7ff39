"""Are the dataset files a local experiment's trials read on this machine? Checked before launch.

Otherwise `create --wait` ends with every trial failed and the reason only in their stderr. The files are the
ones torchvision's readers open (trainers/datasets.py), found without importing torch; the sentences are the
trial's own. Shipped datasets (digits) need no files; remote platforms are not checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The files torchvision's readers (trainers/datasets.py) open under DATA_DIR/expected_path, and the title the
# trial's DataError uses: found here without importing torch, said in the trial's words.
_IDX = ("images-idx3-ubyte", "labels-idx1-ubyte")
_MNIST_FILES = tuple(f"{part}-{kind}" for part in ("train", "t10k") for kind in _IDX)


def _emnist_files(split: str) -> tuple[str, ...]:
    return tuple(f"emnist-{split}-{part}-{kind}" for part in ("train", "test") for kind in _IDX)


_DATA_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": ("CIFAR-10", (*(f"data_batch_{index}" for index in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": ("CIFAR-100", ("train", "test", "meta")),
    "mnist": ("MNIST", _MNIST_FILES),
    "fashion_mnist": ("FashionMNIST", _MNIST_FILES),
    "emnist": ("EMNIST", _emnist_files("balanced")),
    "emnist_byclass": ("EMNIST", _emnist_files("byclass")),
}


def _data_problem(dataset: str, data_dir: str, code_dir: Path) -> str | None:
    """Why a trial would not find DATASET's files, in its words, or None (shipped datasets need no files)."""
    from trainers.datasets import DataError, dataset_entry, imagefolder_classes
    from trainers.image_folders import folder_splits

    entry = dataset_entry(dataset)
    if entry.read is None:  # an image folder, checked as the trial's data module checks it
        folder = code_dir / data_dir  # NNI's local service starts each trial in trialCodeDirectory
        try:
            classes = imagefolder_classes(folder)
        except DataError as error:
            return str(error)
        splits = folder_splits(folder)
        for held_out in (splits.val, splits.test):
            held_classes = sorted(item.name for item in held_out.iterdir() if item.is_dir()) if held_out else classes
            if held_classes != classes:
                return (f"{held_out} has the classes {held_classes}, train/ has {classes}; "
                        f"give both the same class folders.")
        return None
    if not entry.info.expected_path:
        return None
    where = code_dir / Path(data_dir).expanduser() / entry.info.expected_path  # torchvision expands ~
    title, names = _DATA_FILES.get(dataset, (dataset, ()))
    missing = [name for name in names if not (where / name).is_file()]
    if missing or not where.is_dir():
        shown = f" (no {missing[0]})" if missing and where.is_dir() else ""
        return f"{title} files not found under {where}{shown}; put the extracted archive there before launching."
    return None


def data_files_problem(path: Path, settings: Any, code_dir: Path) -> str | None:
    """Why a local experiment's trials would not find their dataset's files (one sentence), or None."""
    from ..data import DataSettings

    seen = set()
    for each in settings if isinstance(settings, list) else [settings]:
        if isinstance(each, DataSettings) and (each.dataset, each.data_dir) not in seen:
            seen.add((each.dataset, each.data_dir))
            problem = _data_problem(each.dataset, each.data_dir, code_dir)
            if problem:
                return f"{path}: {problem}"
    return None
