"""Batches made where the network runs: a split's uint8 images held on the device, augmented and normalised
there a whole batch at a time.

For in-memory datasets (CIFAR, the MNIST family, digits) the DataLoader path spends more time transforming
one image at a time on the CPU and copying it over than a GPU needs for the step. Here one batch is one
gather, one pad-and-crop gather, one flip and one multiply-add, all vectorised.

Same semantics as the DataLoader path (datamodule.build_transform):
- crop: zero padding of max(1, size // 8), a uniformly drawn size x size window (v2.RandomCrop);
- shift: integer translations round(U(-0.1 size, 0.1 size)) per axis, zero fill (v2.RandomAffine's draw);
- resized_crop: area U(0.35, 1), log-uniform aspect in [3/4, 4/3], 10 tries then the centre crop, bilinear
  resize (v2.RandomResizedCrop; resampled from the uint8 pixels with grid_sample, without rounding);
- horizontal flips with p = 0.5 where the dataset allows them, never for "none";
- the same sample order: the epoch's permutation comes from a DataLoader over the indices seeded like the
  data module's own, so both paths see the same images in the same batches (exactly so against
  num_workers=0; persistent workers skip a seed draw from the second epoch on); only the augmentation draws
  differ (they come from a generator on the device).
Usable on the CPU too (device="cpu"), which is how the tests compare the two paths' batches.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

DEVICE_AUGMENTS = ("none", "crop", "shift", "resized_crop")
RESIZED_CROP_SCALE = (0.35, 1.0)  # build_transform's RandomResizedCrop
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's default
RESIZED_CROP_TRIES = 10
SHIFT_FRACTION = 0.1  # build_transform's RandomAffine(translate=(0.1, 0.1))


def crop_padding(size: int) -> int:
    return max(1, size // 8)


def _window(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image's H x W window at (top, left) of its zero-padded copy; B x C x H x W in, the same out."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # B x H+2p x W+2p x C: one gather per pixel
    rows = (top[:, None] + torch.arange(height, device=images.device))[:, :, None]  # B x H x 1
    cols = (left[:, None] + torch.arange(width, device=images.device))[:, None, :]  # B x 1 x W
    picked = padded[torch.arange(batch, device=images.device)[:, None, None], rows, cols]  # B x H x W x C
    return picked.permute(0, 3, 1, 2)


def random_crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    pad = crop_padding(images.shape[-1])
    offsets = torch.randint(0, 2 * pad + 1, (2, images.shape[0]), device=images.device, generator=generator)
    return _window(images, offsets[0], offsets[1], pad)


def random_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translations (dy, dx) = round(U(-0.1 H, 0.1 H)), round(U(-0.1 W, 0.1 W)); content moves by +d."""
    height, width = images.shape[-2:]
    uniform = torch.rand((2, images.shape[0]), device=images.device, generator=generator)
    # Python-scalar limits: a tensor built from a list would be a blocking host-to-device copy per batch.
    shift_y = torch.round((2 * uniform[0] - 1) * (SHIFT_FRACTION * height)).long()
    shift_x = torch.round((2 * uniform[1] - 1) * (SHIFT_FRACTION * width)).long()
    pad = math.ceil(SHIFT_FRACTION * max(height, width))
    return _window(images, pad - shift_y, pad - shift_x, pad)


def random_resized_crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 in, float (0-255) out: torchvision's rejection draw, vectorised over the batch and the tries."""
    batch, _, height, width = images.shape
    device = images.device
    draws = torch.rand((3, batch, RESIZED_CROP_TRIES), device=device, generator=generator)
    low, high = RESIZED_CROP_SCALE
    area = height * width * (low + (high - low) * draws[0])
    log_low, log_high = math.log(RESIZED_CROP_RATIO[0]), math.log(RESIZED_CROP_RATIO[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draws[1])
    crop_w = torch.round(torch.sqrt(area * aspect))
    crop_h = torch.round(torch.sqrt(area / aspect))
    valid = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = valid.float().argmax(dim=1, keepdim=True)  # the first try that fits, as torchvision's loop
    found = valid.any(dim=1)
    fallback_w, fallback_h = _centre_crop_size(height, width)
    crop_w = torch.where(found, crop_w.gather(1, first)[:, 0], torch.full_like(found, fallback_w, dtype=torch.float))
    crop_h = torch.where(found, crop_h.gather(1, first)[:, 0], torch.full_like(found, fallback_h, dtype=torch.float))
    position = torch.rand((2, batch), device=device, generator=generator)
    top = torch.where(found, torch.floor(position[0] * (height - crop_h + 1)), torch.floor((height - crop_h) / 2))
    left = torch.where(found, torch.floor(position[1] * (width - crop_w + 1)), torch.floor((width - crop_w) / 2))
    # Output pixel u samples input x = left + (u + 0.5) * crop_w / W - 0.5 (interpolate, align_corners=False),
    # i.e. grid coordinate (2x + 1) / W - 1.
    steps_x = (torch.arange(width, device=device) + 0.5) / width  # W
    steps_y = (torch.arange(height, device=device) + 0.5) / height
    grid_x = (2 * (left[:, None] + steps_x[None] * crop_w[:, None]) / width - 1)  # B x W
    grid_y = (2 * (top[:, None] + steps_y[None] * crop_h[:, None]) / height - 1)  # B x H
    grid = torch.stack(torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), dim=-1)  # B x H x W x 2
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def _centre_crop_size(height: int, width: int) -> tuple[float, float]:
    in_ratio = width / height
    if in_ratio < RESIZED_CROP_RATIO[0]:
        return float(width), float(round(width / RESIZED_CROP_RATIO[0]))
    if in_ratio > RESIZED_CROP_RATIO[1]:
        return float(round(height * RESIZED_CROP_RATIO[1])), float(height)
    return float(width), float(height)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flipped = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flipped[:, None, None, None], images.flip(-1), images)


def augment_batch(images: torch.Tensor, augment: str, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """uint8 B x C x H x W in; augmented pixels (0-255, uint8 or float) out. `augment` is resolved (no "default")."""
    if augment not in DEVICE_AUGMENTS:
        raise ValueError(f"unknown device augmentation {augment!r}; use one of {', '.join(DEVICE_AUGMENTS)}.")
    if augment == "crop":
        images = random_crop(images, generator)
    elif augment == "shift":
        images = random_shift(images, generator)
    elif augment == "resized_crop":
        images = random_resized_crop(images, generator)
    if flip and augment != "none":
        images = random_flip(images, generator)
    return images


class DeviceBatches:
    """An iterable of (images, labels) batches, like a DataLoader over the same split: float32 normalised
    B x C x H x W images and int64 labels, both already on the device. Iterating again is the next epoch."""

    def __init__(
        self,
        images: torch.Tensor,  # uint8 N x C x H x W of the whole pool, on the device (shared between splits)
        labels: torch.Tensor,  # int64 N, on the device
        indices: torch.Tensor,  # this split's positions in the pool
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        augment: str = "none",
        flip: bool = False,
        shuffle: bool = False,
        seed: int = 0,
    ):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.device = images.device
        self.indices = indices.to(self.device)
        self.augment, self.flip, self.shuffle = augment, flip, shuffle
        # x / 255 then (x - mean) / std, folded into one multiply-add: x * scale + shift.
        std_t = torch.tensor(std, device=self.device, dtype=torch.float32)[:, None, None]
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=self.device, dtype=torch.float32)[:, None, None] / std_t
        # The order generator is the DataLoader path's (datamodule._loader): the same seed, the same draws.
        self.order_generator = torch.Generator().manual_seed(seed) if shuffle else None
        self.augment_generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def epoch_order(self) -> torch.Tensor:
        """This epoch's positions in the pool. A DataLoader over range(n) with the data module's generator
        makes the permutation (its base-seed draw included), so the order equals the DataLoader path's."""
        if not self.shuffle:
            return self.indices
        loader = DataLoader(range(len(self.indices)), batch_size=len(self.indices), shuffle=True,
                            generator=self.order_generator)
        permutation = next(iter(loader))
        return self.indices[permutation.to(self.device)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.epoch_order()
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            images = self.images[chosen]
            if self.augment != "none" or self.flip:
                images = augment_batch(images, self.augment, self.flip, self.augment_generator)
            yield (images.float() * self.scale + self.shift).contiguous(), self.labels[chosen]
