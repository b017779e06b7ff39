"""The features a stage's score is computed from: its last block's output, globally average-pooled, for every
training image (trial-side: torch).

Taken where the authors' code takes them: the sum of the last block's branch and shortcut, before the block's
final ReLU (their `idx_blocks` picks each stage's last Add layer). Pre-ReLU, no pooled channel is clipped at 0,
so fewer channels come out constant.

Pooling: global average (one value per channel: the paper's "features of the stage"), or, as the authors' code
does, an average over `pool` x `pool` windows whose cells are all kept (their pool 8 keeps 4 x 4 cells per
channel at CIFAR's 32 x 32 first stage, 2 x 2 at the second, 1 at the third).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from search_spaces.spec import WIDTH_COUNT, ArchSpec


def stage_sum_modules(model: nn.Module, spec: ArchSpec) -> list[nn.Module]:
    """Per stage, the activation its last block applies after the residual sum (its input is the sum)."""
    modules = []
    for stage_index, stage in enumerate(spec.stages, start=1):
        if not stage.blocks or stage.blocks[-1].kind not in ("basic", "bottleneck"):
            raise ValueError(f"layer{stage_index} does not end in a basic or bottleneck block; stage scores read "
                             f"the residual sum of each stage's last block.")
        last = getattr(model, f"layer{stage_index}")[-1]
        modules.append(getattr(last, f"act{WIDTH_COUNT[stage.blocks[-1].kind]}"))
    return modules


def pool_features(maps: torch.Tensor, pool: int | None) -> torch.Tensor:
    """n x c x h x w -> n x features: the global average (pool None), or the cells of pool x pool windows
    (windows never larger than the map)."""
    if pool is None:
        return maps.mean(dim=(2, 3))
    window = min(pool, maps.shape[2], maps.shape[3])
    return torch.nn.functional.avg_pool2d(maps, window).flatten(1)


@contextmanager
def _pooled_inputs(modules: list[nn.Module], pool: int | None) -> Iterator[list[list[torch.Tensor]]]:
    collected: list[list[torch.Tensor]] = [[] for _ in modules]

    def hook(index: int):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            collected[index].append(pool_features(inputs[0], pool).float().cpu())
        return record

    handles = [module.register_forward_pre_hook(hook(index)) for index, module in enumerate(modules)]
    try:
        yield collected
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def pooled_stage_features(model: nn.Module, spec: ArchSpec, images: Dataset, batch_size: int,
                          limit: int | None = None, pool: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """(per stage an n_images x features matrix, the n labels) of `images` (un-augmented) in eval mode.

    limit: the first `limit` images of the dataset's order (a seeded split), so every candidate of a search
    is scored on the same images.
    """
    if limit is not None and limit < len(images):
        images = Subset(images, range(limit))
    device = next(model.parameters()).device
    model.eval()
    labels = []
    with _pooled_inputs(stage_sum_modules(model, spec), pool) as collected:
        for batch, batch_labels in DataLoader(images, batch_size=batch_size, shuffle=False):
            model(batch.to(device))
            labels.append(batch_labels)
    features = [torch.cat(stage).double().numpy() for stage in collected]
    return features, torch.cat(labels).numpy()
