"""build_model(spec): an ArchSpec to a torch module with timm's ResNet names and timm's model API.

The network answers what timm's own ResNet answers (forward_features / forward_head, forward_intermediates,
prune_intermediate_layers, feature_info, head_hidden_size, get/reset_classifier, set_grad_checkpointing,
group_matcher) and scripts with torch.jit.script, so timm's train.py, feature backbones, TorchScript and ONNX
take an exported search result like any timm ResNet.
"""

from __future__ import annotations

import torch
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices  # where timm's own models import it (not re-exported)
from torch import nn

from .blocks import build_block, conv2d, make_activation
from .spec import ArchSpec

POOL_LAYERS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
GLOBAL_POOLS = ("avg", "")  # timm's names: average, or none (unpooled NCHW features, classifier removed)


def init_resnet_weights(model: nn.Module, zero_init_last: bool = True) -> None:
    """timm's ResNet scheme, so a fresh net (or a searched path) trains like a fresh timm net."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_last:  # residual blocks start as the identity
        for module in model.modules():
            if module is not model and hasattr(module, "zero_init_last"):
                module.zero_init_last()


class Stage(nn.Sequential):
    """`layerN`: an optional pooling layer named `pool`, then blocks named 0, 1, ... (as in timm)."""

    def __init__(self, pool: str, blocks: list[nn.Module]):
        super().__init__()
        if pool != "none":
            self.add_module("pool", POOL_LAYERS[pool](kernel_size=2, stride=2))
        for index, block in enumerate(blocks):
            self.add_module(str(index), block)


# ---- the parts every ResNet-layout module shares: this builder and the NNI spaces (same names, same order) ----
def add_stem(net: nn.Module, spec: ArchSpec) -> None:
    """conv1 - bn1 - act1 - maxpool (an Identity without the max pool), timm's names."""
    stem = spec.stem
    net.conv1 = conv2d(spec.in_channels, stem.out_channels, stem.kernel_size, stem.stride)
    net.bn1 = nn.BatchNorm2d(stem.out_channels)
    net.act1 = make_activation(stem.activation)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem.max_pool else nn.Identity()


def global_pool_layer(pool_type: str) -> nn.Module:
    """(N, C, H, W) -> (N, C) for "avg"; "" keeps the maps (timm's idiom for unpooled features)."""
    if pool_type not in GLOBAL_POOLS:
        raise ValueError(f"resnas_net pools by average ('avg') or not at all (''); drop global_pool={pool_type!r}.")
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)) if pool_type == "avg" else nn.Identity()


def add_head(net: nn.Module, spec: ArchSpec) -> None:
    """global_pool - head_drop - fc."""
    net.global_pool = global_pool_layer("avg")
    net.head_drop = nn.Dropout(spec.head.dropout)
    net.fc = nn.Linear(spec.num_features, spec.head.num_classes)


# The NNI spaces' forward. ResNasNet has its own scriptable copies: TorchScript compiles every function a
# forward calls, and cannot type an `nn.Module` argument.
def forward_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stem, then the stages named in `net.stage_names`."""
    x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
    for name in net.stage_names:
        x = getattr(net, name)(x)
    return x


def forward_head(net: nn.Module, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    x = net.head_drop(net.global_pool(x))
    return x if pre_logits else net.fc(x)


class ResNasNet(nn.Module):
    """A ResNet-family network built from an ArchSpec, with timm's ResNet interface.

    Top-level children run in forward order (conv1, bn1, act1, maxpool, layer1.., global_pool, head_drop, fc),
    which timm's feature extraction wrappers rely on. Feature i of `feature_info` / `forward_intermediates`
    is the stem's output (after act1, before the max pool) for i = 0, and layer{i}'s output after that.
    """

    def __init__(self, spec: ArchSpec, zero_init_last: bool = True):
        super().__init__()
        self.arch_spec = spec
        self.num_classes = spec.head.num_classes
        self.num_features = self.head_hidden_size = spec.num_features  # the average pool keeps the width
        self.grad_checkpointing = False
        stem = spec.stem
        add_stem(self, spec)

        reduction = stem.stride * (2 if stem.max_pool else 1)
        self.feature_info = [dict(num_chs=stem.out_channels, reduction=stem.stride, module="act1")]
        channels = stem.out_channels
        for stage_index, stage in enumerate(spec.stages, start=1):
            blocks = []
            if stage.pool != "none":
                reduction *= 2
            for block in stage.blocks:
                blocks.append(build_block(block, channels))
                channels = block.out_channels
                reduction *= block.stride
            self.add_module(f"layer{stage_index}", Stage(stage.pool, blocks))
            self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=f"layer{stage_index}"))
        self.stage_names = [f"layer{index}" for index in range(1, len(spec.stages) + 1)]

        add_head(self, spec)
        init_resnet_weights(self, zero_init_last)

    # ---- forward (scripted by torch.jit.script: Tensor and bool arguments only) ----
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            # One segment per block (a stage's pool counts as one), as timm's ResNet checkpoints.
            return checkpoint_seq(self.stage_modules(), x, flatten=True)
        # TorchScript cannot getattr() a name held in a list; it unrolls named_children() at compile time.
        for name, child in self.named_children():
            if name in self.stage_names:
                x = child(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- timm's feature API ----
    def stage_modules(self) -> list[nn.Module]:
        """layer1, layer2, ... in forward order."""
        return [getattr(self, name) for name in self.stage_names]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """(final features, [feature maps at `indices`]), or only the list with `intermediates_only`.

        indices: None for every feature, n for the last n, a list for those (negative counts from the end).
        stop_early: skip the stages after the last feature asked for. norm: a ResNet has no final norm (ignored,
        as timm's ResNet does).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"resnas_net's feature maps are NCHW; drop output_fmt={output_fmt!r}.")
        take_indices, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        intermediates = []
        x = self.act1(self.bn1(self.conv1(x)))
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        stages = self.stage_modules()[:max_index] if stop_early else self.stage_modules()
        for index, stage in enumerate(stages, start=1):
            x = checkpoint_seq(stage, x) if self.grad_checkpointing else stage(x)
            if index in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop what no feature at `indices` needs (later stages; the head); returns the absolute indices kept.
        prune_norm: a ResNet has no final norm to prune."""
        take_indices, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        for name in self.stage_names[max_index:]:
            setattr(self, name, nn.Sequential())  # empty, not removed: the name and the forward order stay
        if max_index == 0:
            self.maxpool = nn.Identity()  # runs after feature 0
        prune_end = max_index < len(self.stage_names)
        if prune_end:  # the head was sized for the last stage; the features now end at feature max_index
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    # ---- timm's training API ----
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (same outputs and gradients)."""
        self.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups in forward order for timm's layer-wise decay: the stem, each stage (coarse) or each
        block, then the head."""
        blocks = r"^layer(\d+)\." if coarse else r"^layer(\d+)\.(\d+)\."
        # timm orders groups by the numbers the capture groups match: the stem's alternation must not capture.
        return dict(stem=r"^(?:conv1|bn1)\.", blocks=blocks, head=r"^fc\.")

    def get_classifier(self, name_only: bool = False) -> str | nn.Module:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh `fc` for num_classes (0: none, forward returns pooled features); global_pool None keeps the
        pooling, "avg" averages, "" keeps the maps."""
        if global_pool is None:  # keep the current pooling
            global_pool = "" if isinstance(self.global_pool, nn.Identity) else "avg"
        if global_pool == "" and num_classes > 0:
            raise ValueError("an unpooled head ('') has no classifier; pass num_classes=0 or global_pool='avg'.")
        like = self.conv1.weight
        self.global_pool = global_pool_layer(global_pool).train(self.training)
        self.num_classes = num_classes
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
        else:
            self.fc = nn.Identity()
        self.fc.train(self.training)
        self.head_hidden_size = self.num_features


def build_model(spec: ArchSpec, zero_init_last: bool = True) -> ResNasNet:
    """Build the network an ArchSpec describes (freshly initialised)."""
    return ResNasNet(spec, zero_init_last=zero_init_last)
