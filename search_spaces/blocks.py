"""The torch layers an ArchSpec is built from, named like timm/torchvision's ResNet so state dicts interchange.

Blocks take layer types and numbers; activation names are resolved once, here, by `activation_layer`.
"""

from __future__ import annotations

import torch
from torch import nn

from .spec import ACTIVATIONS, RESIDUAL_KINDS, BlockSpec, SpecError

ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "mish": nn.Mish,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}
assert set(ACTIVATION_LAYERS) == set(ACTIVATIONS), "spec.ACTIVATIONS and ACTIVATION_LAYERS must list the same names"


def activation_layer(name: str) -> type[nn.Module]:
    try:
        return ACTIVATION_LAYERS[name]
    except KeyError:
        raise SpecError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATION_LAYERS)}.") from None


def make_activation(name: str) -> nn.Module:
    layer = activation_layer(name)
    # In-place ReLU saves one activation-sized buffer per block; the others have no in-place variant we trust
    # with autograd through residual adds.
    return layer(inplace=True) if layer is nn.ReLU else layer()


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """The shortcut's 1x1 conv + BN; indices 0/1 match timm's `downsample.0`/`downsample.1`."""
    return nn.Sequential(conv2d(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class ConvBlock(nn.Module):
    """conv - BN - act, one plain layer (NASH's layers, ResBuilder's stem-like layers)."""

    def __init__(self, in_channels: int, width: int, kernel_size: int = 3, stride: int = 1, activation: str = "relu"):
        super().__init__()
        self.conv1 = conv2d(in_channels, width, kernel_size, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv1(x)))

    def zero_init_last(self) -> None:
        """A plain layer has no residual to fall back on; nothing to do."""


class BasicBlock(nn.Module):
    """timm/torchvision BasicBlock with a free kernel size, activation and two widths."""

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, int],
        kernel_size: int = 3,
        stride: int = 1,
        activation: str = "relu",
        with_projection: bool = False,
    ):
        super().__init__()
        self.conv1 = conv2d(in_channels, widths[0], kernel_size, stride)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = make_activation(activation)
        self.conv2 = conv2d(widths[0], widths[1], kernel_size)
        self.bn2 = nn.BatchNorm2d(widths[1])
        self.act2 = make_activation(activation)
        self.downsample = projection(in_channels, widths[1], stride) if with_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class ResBuilderBlock(BasicBlock):
    """Burghoff et al.'s residual block, x + act2(bn2(conv2(act1(bn1(conv1(x)))))): the basic block's layers
    (same names, same state dict keys) with the second activation moved inside the branch, nothing after the
    sum. A branch that outputs zero (bn2's weight and bias zero) leaves the block exactly the identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(x))) + shortcut

    def zero_init_last(self) -> None:
        """Keep timm's BN init (weight 1): a zero bn2 weight (bias 0) puts every input of act2 at 0, where ReLU's
        gradient is 0, so the branch would never train. A fresh block is the paper's random init; the
        near-identity start is the insertion edit's (small random bn2 weight, edits/resbuilder.py)."""


class Bottleneck(nn.Module):
    """timm/torchvision (v1.5) Bottleneck: the stride and the free kernel size sit on the middle conv."""

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, int, int],
        kernel_size: int = 3,
        stride: int = 1,
        activation: str = "relu",
        with_projection: bool = False,
    ):
        super().__init__()
        self.conv1 = conv2d(in_channels, widths[0], 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = make_activation(activation)
        self.conv2 = conv2d(widths[0], widths[1], kernel_size, stride)
        self.bn2 = nn.BatchNorm2d(widths[1])
        self.act2 = make_activation(activation)
        self.conv3 = conv2d(widths[1], widths[2], 1)
        self.bn3 = nn.BatchNorm2d(widths[2])
        self.act3 = make_activation(activation)
        self.downsample = projection(in_channels, widths[2], stride) if with_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


RESIDUAL_BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock, "bottleneck": Bottleneck, "resbuilder": ResBuilderBlock,
}
if set(RESIDUAL_BLOCKS) != set(RESIDUAL_KINDS):  # a kind the spec accepts but nothing builds would fail late
    raise ImportError("spec.RESIDUAL_KINDS and blocks.RESIDUAL_BLOCKS must list the same block kinds.")


def build_block(spec: BlockSpec, in_channels: int) -> nn.Module:
    if spec.kind == "conv":
        return ConvBlock(in_channels, spec.widths[0], spec.kernel_size, spec.stride, spec.activation)
    block_type = RESIDUAL_BLOCKS[spec.kind]
    return block_type(in_channels, spec.widths, spec.kernel_size, spec.stride, spec.activation, spec.projection)
