"""NNI model spaces over the ResNet family, each with `to_spec(sample) -> ArchSpec`.

NNI's magic (ModelSpace, LayerChoice, Repeat) stays in this package: the rest of resnas sees ArchSpecs. The
decisions themselves (labels, candidates, the spec a sample names) are torch-free in search_spaces/choices.py;
each space holds its `choices` and builds the modules around them.

- Every module that holds weights keeps the name the builder gives it (`layer3.2.conv2` is the LayerChoice
  holding the candidates; a frozen Repeat is a Sequential named like a builder Stage), so the state dict
  of `space.freeze(sample)` loads strictly into `build_model(space.to_spec(sample))`.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch

# NNI 3.0 walks torch.nn at import and warns about every class newer than itself (harmless noise).
warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module", category=RuntimeWarning)
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat  # noqa: E402
from torch import nn  # noqa: E402

from ..blocks import Bottleneck, activation_layer, build_block, conv2d  # noqa: E402
from ..builder import Stage, add_head, add_stem, forward_features, forward_head, init_resnet_weights  # noqa: E402
from ..choices import DEPTH_BLOCKS, ChoiceLabels, DepthChoices, ScopeChoices, kernel_name  # noqa: E402
from ..scopes import ACTIVATION_CANDIDATES, KERNEL_CANDIDATES, SCOPES  # noqa: E402
from ..spec import ArchSpec, SpecError  # noqa: E402

__all__ = ["DEPTH_BLOCKS", "ChoiceLabels", "DepthResNet", "ScopedResNet50", "candidate_activation", "kernel_name"]


def candidate_activation(name: str) -> nn.Module:
    # Never in-place inside a LayerChoice: NNI's DARTS runs every candidate on the same input tensor and
    # Proxyless re-runs the others on the saved input in backward, so an in-place ReLU would feed relu(x)
    # to the other candidates. Same function and parameters as the builder's in-place ReLU.
    return activation_layer(name)()


class ScopedResNet50(ModelSpace):
    """ResNet-50 whose bottlenecks inside `scope` choose their middle-conv kernel and their activation.

    Each searched block carries two decisions: `layerS_B_kernel` (the LayerChoice at `layerS.B.conv2`,
    candidates "k3", "k5", ...) and `layerS_B_act` (LayerChoices at act1, act2 and act3 sharing that one
    label: NNI 3.0 merges mutables of equal label into one decision, in `simplify()`, `random()`, `freeze()`,
    and DARTS/Proxyless give the label one alpha and one sampled path). Blocks outside the scope stay k3/ReLU.
    """

    def __init__(
        self,
        scope: str,
        kernels: tuple[int, ...] = KERNEL_CANDIDATES,
        activations: tuple[str, ...] = ACTIVATION_CANDIDATES,
        num_classes: int = 10,
        stem: str = "imagenet",
        width_multiplier: float = 1.0,
        in_channels: int = 3,
    ):
        super().__init__()
        for activation in activations:
            activation_layer(activation)  # unknown names raise with the valid list
        self.choices = ScopeChoices.resnet50(scope, num_classes, stem, width_multiplier, in_channels, tuple(kernels),
                                             tuple(activations))
        self.scope = scope
        self.kernels = self.choices.kernels
        self.activations = self.choices.activations
        self.base_spec = self.choices.base_spec
        add_stem(self, self.base_spec)
        channels = self.base_spec.stem.out_channels
        self.stage_names = []
        for stage_index, stage in enumerate(self.base_spec.stages, start=1):
            blocks = []
            for block_index, block in enumerate(stage.blocks):
                module = build_block(block, channels)
                if stage_index in SCOPES[scope]:
                    self._make_searchable(module, block, f"layer{stage_index}_{block_index}")
                blocks.append(module)
                channels = block.out_channels
            self.add_module(f"layer{stage_index}", Stage(stage.pool, blocks))
            self.stage_names.append(f"layer{stage_index}")
        add_head(self, self.base_spec)
        init_resnet_weights(self)

    def _make_searchable(self, module: Bottleneck, block, prefix: str) -> None:
        module.conv2 = LayerChoice(
            {kernel_name(k): conv2d(block.widths[0], block.widths[1], k, block.stride) for k in self.kernels},
            label=f"{prefix}_kernel",
        )
        for site in ("act1", "act2", "act3"):
            choice = LayerChoice({name: candidate_activation(name) for name in self.activations}, label=f"{prefix}_act")
            setattr(module, site, choice)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_head(self, forward_features(self, x))

    def choice_labels(self) -> ChoiceLabels:
        """(label, candidate values) of every decision, in forward order: kernel then activation per block."""
        return self.choices.choice_labels()

    def to_spec(self, sample: dict) -> ArchSpec:
        """The ArchSpec of the path `sample` (label -> candidate name) picks."""
        return self.choices.to_spec(sample)


class DepthResNet(ModelSpace):
    """A ResNet whose stages each choose their depth (NNI `Repeat`, label `layerS_depth`) within bounds.

    Stage S has `widths[S-1]` planes (basic: two convs of that width; bottleneck: planes, planes, 4*planes);
    the first block of stages 2.. has stride 2 (torchvision layout). A sample keeps the first `depth` blocks of
    each stage. A stage with a fixed depth (min == max) is a plain builder Stage and has no label.
    A stage may be empty (min 0) only when its blocks keep the shape (stride 1, channels in == out, as
    layer1 of a basic-block ResNet): otherwise the next stage's first block, built for this stage's output
    channels, would receive the previous stage's, and no static supernet can hold both.
    """

    def __init__(
        self,
        depth_ranges: tuple[tuple[int, int], ...] = ((1, 3), (1, 4), (1, 6), (1, 3)),
        block: str = "basic",
        widths: tuple[int, ...] | None = None,
        num_classes: int = 10,
        stem: str = "cifar",
        width_multiplier: float = 1.0,
        in_channels: int = 3,
    ):
        super().__init__()
        self.choices = DepthChoices.resnet(depth_ranges, block, widths, num_classes, stem, width_multiplier,
                                           in_channels)
        self.depth_ranges = self.choices.depth_ranges
        self.block = block
        self.base_spec = self.choices.base_spec

        add_stem(self, self.base_spec)
        self.stage_names = []
        channels = self.base_spec.stem.out_channels
        for stage_index, (stage, (low, high)) in enumerate(zip(self.base_spec.stages, self.depth_ranges), start=1):
            first = stage.blocks[0]
            if low == 0 and first.projection:
                raise SpecError(
                    f"layer{stage_index} changes the shape ({channels} -> {first.out_channels} channels, "
                    f"stride {first.stride}) so it cannot be empty; use a min depth of at least 1 there."
                )
            in_channels_of = [channels] + [b.out_channels for b in stage.blocks[:-1]]
            modules = [build_block(spec, c) for spec, c in zip(stage.blocks, in_channels_of)]
            if low == high:
                self.add_module(f"layer{stage_index}", Stage(stage.pool, modules))
            else:
                self.add_module(f"layer{stage_index}", Repeat(modules, (low, high), label=f"layer{stage_index}_depth"))
            self.stage_names.append(f"layer{stage_index}")
            channels = stage.blocks[-1].out_channels
        add_head(self, self.base_spec)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_head(self, forward_features(self, x))

    def extra_oneshot_hooks(self, strategy: Any) -> list:
        """NNI's one-shot strategies ask the space for extra mutation hooks; DARTS needs one (see below)."""
        from nni.nas.strategy import DARTS, Proxyless

        if isinstance(strategy, DARTS) and not isinstance(strategy, Proxyless):  # GumbelDARTS is a DARTS too
            return [_darts_repeat_class().mutate]
        return []

    def choice_labels(self) -> ChoiceLabels:
        """(label, candidate depths) of every variable stage, in forward order."""
        return self.choices.choice_labels()

    def to_spec(self, sample: dict) -> ArchSpec:
        """The ArchSpec of the sampled depths (label -> int); fixed stages keep their depth."""
        return self.choices.to_spec(sample)


@functools.cache  # one class, built on first use: the one-shot package imports Lightning, which tuners never need
def _darts_repeat_class() -> type:
    """NNI 3.0's DifferentiableMixedRepeat with the empty stage in its mixture.

    NNI's forward sums w_d * (output after d blocks) over d >= 1 only (`enumerate(blocks, start=1)`), so with
    min depth 0 the identity path w_0 * x is silently missing and the stage output shrinks by w_0.
    """
    from nni.nas.oneshot.pytorch.supermodule._expression_utils import traverse_all_options, weighted_sum
    from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedRepeat

    class DartsRepeatWithEmptyStage(DifferentiableMixedRepeat):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            weights = {label: self._softmax(alpha) for label, alpha in self._arch_alpha.items()}
            depth_weights = dict(traverse_all_options(self.depth_choice, weights=weights))
            outputs, output_weights = ([x], [depth_weights[0]]) if 0 in depth_weights else ([], [])
            for depth, block in enumerate(self.blocks, start=1):
                x = block(x)
                if depth in depth_weights:
                    outputs.append(x)
                    output_weights.append(depth_weights[depth])
            return weighted_sum(outputs, output_weights)

    return DartsRepeatWithEmptyStage
