"""The paper's search scopes of ResNet-50 (Search Space Adaptation for Differentiable NAS): s, m, l, f, the
candidates each searched block chooses from, and the spatial size each searched kernel slides over.

No torch or NNI here: settings parsers and config checks read the scopes without building anything.
"""

from __future__ import annotations

from .spec import STEMS, resnet_spec

# scope -> the stages (1-based) whose blocks are searched, counted from the deepest.
SCOPES: dict[str, tuple[int, ...]] = {"s": (4,), "m": (3, 4), "l": (2, 3, 4), "f": (1, 2, 3, 4)}
SCOPE_NAMES: tuple[str, ...] = tuple(SCOPES)
# Table I's plain ResNet-50 row: a trial with this scope searches nothing and retrains the standard network.
BASELINE_SCOPE = "none"

# The one definition of what a searched block chooses from (ScopedResNet50's defaults, the settings checks).
KERNEL_CANDIDATES: tuple[int, ...] = (3, 5)  # middle-conv kernel sizes
ACTIVATION_CANDIDATES: tuple[str, ...] = ("relu", "leaky_relu", "mish")

MAX_IMAGE_SIZE = 1 << 14  # where the search for a sufficient image size gives up (no real input is larger)


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Side of a conv's or pool's output map (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def stem_output_size(stem: str, image_size: int) -> int:
    """Side of the map after the stem: imagenet conv 7x7/s2/p3 then max-pool 3/s2/p1; cifar conv 3x3/s1/p1."""
    spec = STEMS[stem]
    size = conv_output_size(image_size, spec.kernel_size, spec.stride, spec.kernel_size // 2)
    if spec.max_pool:
        size = conv_output_size(size, 3, 2, 1)  # the builder's nn.MaxPool2d(3, stride=2, padding=1)
    return size


def searched_kernel_maps(scope: str, stem: str, image_size: int) -> list[tuple[int, int, int]]:
    """(stage, block, side of the map the middle conv slides over) of every searched block of ResNet-50.

    The compared size is the middle conv's *input*: in block 0 of a strided stage (stages 2-4) that is the
    previous stage's map, since the stride is on this very conv (torchvision layout; conv1 is 1x1/s1), so
    the kernel sees the larger map and only its output is halved. Every other block reads its own stage's map.
    """
    if scope not in SCOPES:
        return []  # the baseline (or an unknown scope, refused elsewhere) searches no kernel
    size = stem_output_size(stem, image_size)
    maps = []
    for stage_index, stage in enumerate(resnet_spec(50, stem=stem).stages, start=1):
        if stage.pool != "none":  # ResNet-50 has none; kept so the walk stays right if a layout adds one
            size = conv_output_size(size, 2, 2, 0)
        for block_index, block in enumerate(stage.blocks):
            if stage_index in SCOPES[scope]:
                maps.append((stage_index, block_index, size))
            # Output side of the (padded, odd) middle conv: the same for every candidate kernel.
            size = conv_output_size(size, block.kernel_size, block.stride, block.kernel_size // 2)
    return maps


def smallest_image_size_for_kernels(scope: str, stem: str, kernel_size: int) -> int:
    """The smallest image side at which every searched block's map is at least `kernel_size` wide."""
    for image_size in range(1, MAX_IMAGE_SIZE + 1):  # map sides grow with the image side: the first fit is it
        if all(side >= kernel_size for _, _, side in searched_kernel_maps(scope, stem, image_size)):
            return image_size
    raise ValueError(
        f"no image size up to {MAX_IMAGE_SIZE} fits a {kernel_size}x{kernel_size} kernel in scope {scope}; "
        f"use smaller kernel candidates."
    )
