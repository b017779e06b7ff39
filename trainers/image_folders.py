"""Which folder of an image-folder dataset plays which role: training, search validation, test.

The common layouts, and what each split is:

    train/ + test/          test/ is the test set; search validation is carved from train/
    train/ + val/           val/ is the held-out test set (as ImageNet-style val/ folders are);
                            search validation is carved from train/
    train/ + val/ + test/   val/ validates the search, test/ tests
    train/ alone            a seeded 10% of train/ is carved out as the test set, the same for every seed

The split that selected a network is never reported as its test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CARVED_TEST_FRACTION = 0.1
CARVED_TEST_SEED = 0  # fixed: every search on one folder tests on the same images, whatever its own seed


@dataclass(frozen=True)
class FolderSplits:
    train: Path
    val: Path | None  # None: search validation is carved from train/
    test: Path | None  # None: the test set is carved from train/

    @property
    def test_source(self) -> str:
        """Where test accuracy comes from, in words a result can carry."""
        if self.test is not None:
            return f"{self.test.name}/"
        return f"{CARVED_TEST_FRACTION:.0%} of train/ held out (seed {CARVED_TEST_SEED}); no test/ or val/ folder"


def folder_splits(data_dir: Path) -> FolderSplits:
    """The roles of DATA_DIR's folders (datasets.imagefolder_classes checks that train/ exists)."""
    train, val, test = (Path(data_dir) / name for name in ("train", "val", "test"))
    if test.is_dir():
        return FolderSplits(train, val if val.is_dir() else None, test)
    return FolderSplits(train, None, val if val.is_dir() else None)
