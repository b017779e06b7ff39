"""Another view of a dataset split: the same images and labels through another transform."""

from __future__ import annotations

import copy
from typing import Any

from torch.utils.data import Dataset, Subset


def with_transform(dataset: Dataset, transform: Any) -> Dataset:
    """The same images and labels seen through another transform (Subsets keep their indices; the
    underlying tensors or files are shared, not copied)."""
    if isinstance(dataset, Subset):
        return Subset(with_transform(dataset.dataset, transform), dataset.indices)
    if not hasattr(dataset, "transform"):
        raise TypeError(f"{type(dataset).__name__} has no transform to replace; wrap it in a Subset of a "
                        f"dataset with a `transform` attribute.")
    copied = copy.copy(dataset)
    copied.transform = transform
    return copied
