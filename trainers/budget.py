"""Training FLOPs: what a search spent, summed over every network it trained (the supernet included).

One unit: images seen in training steps x the trained network's training FLOPs per image. The ledger is
process-wide; the places that train (fitting.fit, the ProxylessNAS supernet loop) add to it, and a caller
measures a stretch of work with `measuring()`:

    with measuring() as ledger:
        search_locally("stagewise", work_dir, **settings)
    print(ledger.total)

Forward FLOPs are search_spaces.cost's (a multiply-add counts two; convolutions and matrix products only).
No torch here: anything may import this, NNI's tuner process included.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

# A backward pass costs about twice its forward (the gradients of the activations and of the weights are each
# one more product of the same size), so one training image costs about 3 forwards (Kaplan et al. 2020's 6N
# per token is the same rule with a multiply-add counted as 2 FLOPs).
BACKWARD_PER_FORWARD = 2


def training_flops(forward_flops_per_image: int, images: int) -> int:
    """FLOPs of `images` training steps' worth of forward + backward through a network of that forward cost."""
    if forward_flops_per_image < 0 or images < 0:
        raise ValueError(f"forward FLOPs ({forward_flops_per_image}) and images ({images}) cannot be negative.")
    return (1 + BACKWARD_PER_FORWARD) * int(forward_flops_per_image) * int(images)


@dataclass
class LedgerLine:
    """What one kind of training (`what`: fit, supernet weights, supernet architecture) spent."""

    flops: int = 0
    images: int = 0


class TrainingLedger:
    """Training FLOPs and images, summed per kind of training."""

    def __init__(self) -> None:
        self.lines: dict[str, LedgerLine] = {}

    def add(self, forward_flops_per_image: int, images: int, what: str = "fit") -> int:
        """Book `images` training images through a network of that forward cost; returns the FLOPs booked."""
        flops = training_flops(forward_flops_per_image, images)
        line = self.lines.setdefault(what, LedgerLine())
        line.flops += flops
        line.images += int(images)
        return flops

    @property
    def total(self) -> int:
        return sum(line.flops for line in self.lines.values())

    @property
    def images(self) -> int:
        return sum(line.images for line in self.lines.values())

    def reset(self) -> None:
        self.lines.clear()

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {what: {"flops": line.flops, "images": line.images} for what, line in self.lines.items()}


# Everything this process trained since it started (or since LEDGER.reset()), and the measurements under way.
LEDGER = TrainingLedger()
_OPEN: list[TrainingLedger] = []


def record_training(forward_flops_per_image: int, images: int, what: str = "fit") -> None:
    """What training code calls: books the images in the process ledger and in every open measurement."""
    LEDGER.add(forward_flops_per_image, images, what)
    for ledger in _OPEN:
        ledger.add(forward_flops_per_image, images, what)


@contextmanager
def measuring() -> Iterator[TrainingLedger]:
    """A fresh ledger that sees every training booked inside the block (nested blocks each see theirs)."""
    ledger = TrainingLedger()
    _OPEN.append(ledger)
    try:
        yield ledger
    finally:
        _OPEN.remove(ledger)
