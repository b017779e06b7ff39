"""The one place that picks where training runs: the first visible CUDA device, else the CPU.

NNI gives a GPU trial its devices through CUDA_VISIBLE_DEVICES, so `cuda` here is always the trial's own GPU.
"""

from __future__ import annotations

import torch


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lightning_accelerator() -> str:
    """The same choice in Lightning's vocabulary."""
    return "gpu" if training_device().type == "cuda" else "cpu"
