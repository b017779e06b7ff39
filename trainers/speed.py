"""How fast training runs without changing what it computes more than it must: numeric precision, memory
format, and DataLoader sizing. Resolved once per run from the settings' "auto" values and the device.

Torch-free at import (like datasets.py): the settings read the option names in NNI's tuner process.

Precision: "auto" is 32 on the CPU, where bf16 autocast is slow and changes the numbers, and on CUDA
bf16-mixed where the GPU supports it (no loss scaling needed), else 16-mixed (with a gradient scaler). An
explicit mixed precision without a GPU is refused rather than quietly changed: a config that asks for it
was written for a GPU machine, and a trial that silently trains in another precision reports numbers that
cannot be compared with its siblings'.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, ContextManager, Literal, get_args

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "32", "bf16-mixed", "16-mixed"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
MIXED_PRECISIONS = ("bf16-mixed", "16-mixed")

# A yes/no setting whose "auto" is decided by the device: channels_last, data_on_device.
Switch = bool | Literal["auto"]
SWITCHES: tuple[object, ...] = ("auto", True, False)

# Workers beyond this rarely help one trial (in-memory tensors are cheap to transform) and cost start-up time.
MAX_AUTO_WORKERS = 8


class SpeedError(ValueError):
    """A speed setting this machine cannot honour; the message is one sentence naming the fix."""


def check_switch(value: object, name: str) -> None:
    if value not in SWITCHES or (value in (0, 1) and not isinstance(value, bool)):  # 1 == True in Python
        raise SpeedError(f"{name}={value!r} is not valid; use auto, true or false.")


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """The precision to train in on `device`: "32", "bf16-mixed" or "16-mixed"."""
    import torch

    if requested not in PRECISIONS:
        raise SpeedError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}.")
    on_cuda = torch.device(device).type == "cuda"
    if requested == "auto":
        if not on_cuda:
            return "32"
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if requested in MIXED_PRECISIONS and not on_cuda:
        raise SpeedError(f"precision {requested} needs a CUDA GPU and this run has none; set precision to auto or "
                         f"32, or give the trials a GPU (trialGpuNumber).")
    return requested


def resolve_channels_last(requested: Switch, device: torch.device | str, precision: str) -> bool:
    """auto: on with CUDA and mixed precision, where cuDNN's tensor-core convolutions want NHWC; on the CPU
    and in fp32 the gain is small or negative."""
    import torch

    check_switch(requested, "channels_last")
    if requested == "auto":
        return torch.device(device).type == "cuda" and precision in MIXED_PRECISIONS
    return bool(requested)


def lightning_precision(precision: str) -> str:
    """Lightning's name for a resolved precision ("32" is its legacy alias of "32-true")."""
    return "32-true" if precision == "32" else precision


def autocast(precision: str, device: torch.device | str) -> ContextManager:
    """The autocast context of a resolved precision (a no-op context for 32)."""
    import torch

    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    import torch

    if precision != "16-mixed":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def available_cpus() -> int:
    """CPUs this process may run on (a trial pinned by taskset or a container quota sees its share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def default_workers(device: torch.device | str) -> int:
    """DataLoader workers when the setting is unset: on CUDA all spare CPUs (the GPU waits for batches,
    the main process only launches kernels), up to MAX_AUTO_WORKERS; on the CPU none, because the training
    step's own threads use every core, and an in-memory batch costs a few percent of a CPU step
    (benchmarks/train_throughput.py's data-only line), less than the workers' contention and start-up."""
    import torch

    if torch.device(device).type != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, available_cpus() - 1))
