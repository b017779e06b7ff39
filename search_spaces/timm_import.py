"""A pretrained timm ResNet as a resnas network: (ArchSpec, state dict) that build_model loads strictly and that
computes what timm's network computes (eval mode; checked on every import), plus where it came from.

    imported = import_timm_resnet("timm:resnet50.a1_in1k", num_classes=10)
    model = build_model(imported.spec); model.load_state_dict(imported.state_dict)

What maps onto resnas's blocks (read from the modules, not the name): timm's ResNet class with a one-conv stem
(7x7/2) + BN + activation + the 3x3/2 max pool, stages of BasicBlocks or Bottlenecks (the stride on the 3x3, as
torchvision v1.5) of any depth and widths (wide_resnet's wider 3x3s included), 1x1 conv + BN projections, one
activation per block among resnas's, BatchNorm with eps 1e-5, the average-pooled linear head and its dropout.
Everything else is refused in one sentence naming it: deep stems and average-pool shortcuts (the c/d/s/t
variants), anti-aliasing, squeeze-and-excitation and other attention, grouped convs (ResNeXt), dilation, DropBlock
and drop path, other pools and norms. A resnas export (architecture resnas_net) imports as the spec it carries.

A head for another number of classes is a fresh `fc` (nn.Linear's init, as build_model's); another input channel
count adapts conv1 as timm does for its own pretrained weights (timm.models.adapt_input_conv).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import timm
import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import adapt_input_conv, load_state_dict
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from . import timm_entry  # noqa: F401  # registers resnas_net: a resnas export folder loads through timm too
from .builder import ResNasNet, build_model
from .errors import PretrainedError
from .model_card import NetworkOrigin
from .pretrained_sources import PretrainedSource, parse_pretrained_source
from .spec import ArchSpec, BlockSpec, HeadSpec, SpecError, StageSpec, StemSpec

# Exact types: a subclass (timm's Conv2dSame, BatchNormAct2d, ...) computes something else under the same name.
ACTIVATION_NAMES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu", nn.SiLU: "silu", nn.Mish: "mish", nn.Identity: "identity",
}
BN_EPS = 1e-5  # nn.BatchNorm2d's default, what resnas's blocks (and the deepen morphism's identity BN) use
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a folder or Hub repo, in its order
CHECK_SIZE = 64  # px of the self-check's input: every ResNet stage keeps at least 2x2 at 64 px
CHECK_TOLERANCE = 1e-4  # of the self-check; float32 sums in another order differ by ~1e-6 relative


@dataclass(frozen=True)
class ImportedNetwork:
    spec: ArchSpec
    state_dict: dict[str, torch.Tensor]  # loads strictly into build_model(spec)
    origin: NetworkOrigin


def import_timm_resnet(source: str, num_classes: int | None = None, in_channels: int | None = None) -> ImportedNetwork:
    """The network `source` names (search_spaces.pretrained_sources), with a new head when `num_classes` differs
    from its own and conv1 adapted when `in_channels` does (None: keep)."""
    parsed = parse_pretrained_source(source)
    if parsed.kind == "timm":
        _refuse_early(parsed, source)  # before any download: built on the meta device, no memory, no weights
    model = _create(parsed, source).eval()
    spec = model.arch_spec if isinstance(model, ResNasNet) else timm_resnet_spec(model, source)
    state_dict = {key: tensor.detach().clone() for key, tensor in model.state_dict().items()}
    _check_same_function(model, spec, state_dict, source)
    spec, state_dict, changes = _adapt(spec, state_dict, num_classes, in_channels)
    return ImportedNetwork(spec, state_dict, _origin(parsed, source, model, changes))


# ---- reading timm's modules ------------------------------------------------------------------------------------
def timm_resnet_spec(model: nn.Module, name: str = "the timm model") -> ArchSpec:
    """The ArchSpec of a timm ResNet, or PretrainedError naming the first part resnas cannot express."""
    if type(model) is not ResNet:
        raise PretrainedError(f"{name} is a timm {type(model).__name__}, not a ResNet; give one of timm's resnet* "
                              f"models (resnet18, resnet34, resnet50, resnet101, resnet152, wide_resnet50_2, ...).")
    if type(model.conv1) is nn.Sequential:
        _refuse(name, "a deep stem (three 3x3 convs, timm's c/d/s/t variants)")
    kernel, stride, stem_width = _conv(model.conv1, name, "conv1")
    _batch_norm(model.bn1, name, "bn1")
    stem = StemSpec(out_channels=stem_width, kernel_size=kernel, stride=stride, max_pool=_max_pool(model.maxpool, name),
                    activation=_activation(model.act1, name, "act1"))
    stages = []
    index = 1
    while isinstance(getattr(model, f"layer{index}", None), nn.Sequential):
        stage = getattr(model, f"layer{index}")
        stages.append(StageSpec(blocks=tuple(_block(block, name, f"layer{index}.{position}")
                                             for position, block in enumerate(stage))))
        index += 1
    head = HeadSpec(num_classes=_head(model, name), dropout=float(model.drop_rate))
    try:
        return ArchSpec(stem=stem, stages=tuple(stages), head=head, in_channels=model.conv1.in_channels)
    except SpecError as error:
        raise PretrainedError(f"{name} does not fit a resnas ArchSpec ({error}).") from None


def _refuse(name: str, variant: str) -> None:
    raise PretrainedError(f"{name} has {variant}, which resnas's blocks cannot express; start from a plain timm "
                          f"ResNet (resnet18/34/50/101/152, wide_resnet50_2, or a weight tag of one) instead.")


def _conv(conv: nn.Module, name: str, where: str) -> tuple[int, int, int]:
    """(kernel size, stride, out channels) of a plain square conv with 'same' padding and no bias."""
    if type(conv) is not nn.Conv2d:
        _refuse(name, f"a {type(conv).__name__} at {where} where resnas has a plain conv")
    if conv.groups != 1:
        _refuse(name, f"grouped convolutions at {where} (ResNeXt's cardinality)")
    if conv.dilation != (1, 1):
        _refuse(name, f"dilated convolutions at {where} (output_stride 8 or 16)")
    kernel, stride = conv.kernel_size, conv.stride
    if kernel[0] != kernel[1] or stride[0] != stride[1] or kernel[0] % 2 == 0 or stride[0] not in (1, 2):
        _refuse(name, f"a {kernel} conv with stride {stride} at {where}")
    if conv.padding != (kernel[0] // 2,) * 2 or conv.padding_mode != "zeros" or conv.bias is not None:
        _refuse(name, f"a conv at {where} with padding {conv.padding} ({conv.padding_mode}) or a bias")
    return kernel[0], stride[0], conv.out_channels


def _batch_norm(norm: nn.Module, name: str, where: str) -> None:
    if type(norm) is not nn.BatchNorm2d:
        _refuse(name, f"a {type(norm).__name__} at {where} where resnas has BatchNorm2d")
    if norm.eps != BN_EPS or not norm.affine or not norm.track_running_stats:
        _refuse(name, f"a BatchNorm at {where} with eps {norm.eps} (resnas's is {BN_EPS}) or without affine "
                      f"weights or running statistics")


def _activation(module: nn.Module, name: str, where: str) -> str:
    activation = ACTIVATION_NAMES.get(type(module))
    if activation is None:
        _refuse(name, f"the activation {type(module).__name__} at {where}")
    return activation


def _max_pool(pool: nn.Module, name: str) -> bool:
    if type(pool) is nn.Identity:
        return False
    if type(pool) is nn.MaxPool2d and (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode) in (
            (3, 2, 1, 1, False), ((3, 3), (2, 2), (1, 1), (1, 1), False)):
        return True
    _refuse(name, f"a stem pool {type(pool).__name__} other than 3x3/2 max pooling (anti-aliasing or "
                  f"replace_stem_pool)")
    return False  # unreachable: _refuse raises


def _block(block: nn.Module, name: str, where: str) -> BlockSpec:
    kind = {BasicBlock: "basic", Bottleneck: "bottleneck"}.get(type(block))
    if kind is None:
        _refuse(name, f"a {type(block).__name__} block at {where}")
    if block.se is not None:
        _refuse(name, f"squeeze-and-excitation or attention ({type(block.se).__name__}) at {where}")
    if type(block.aa) is not nn.Identity:
        _refuse(name, f"anti-aliased downsampling ({type(block.aa).__name__}) at {where}")
    if type(block.drop_block) is not nn.Identity:
        _refuse(name, f"DropBlock at {where}")
    if block.drop_path is not None:
        _refuse(name, f"drop path (stochastic depth, drop_path_rate) at {where}")
    if kind == "basic":
        convs, strided = ("conv1", "conv2"), "conv1"
    else:
        convs, strided = ("conv1", "conv2", "conv3"), "conv2"
    widths, kernel, stride = [], 3, 1
    for conv_name in convs:
        conv_kernel, conv_stride, width = _conv(getattr(block, conv_name), name, f"{where}.{conv_name}")
        widths.append(width)
        _batch_norm(getattr(block, conv_name.replace("conv", "bn")), name, f"{where}.{conv_name.replace('conv', 'bn')}")
        if conv_name == strided:
            kernel, stride = conv_kernel, conv_stride
        elif conv_stride != 1 or (kind == "bottleneck" and conv_kernel != 1):
            _refuse(name, f"a {conv_kernel}x{conv_kernel}/{conv_stride} {conv_name} at {where} (torchvision's "
                          f"layout strides the {strided})")
        elif kind == "basic" and conv_kernel != kernel:
            _refuse(name, f"two kernel sizes in the basic block at {where}")
    activations = {_activation(getattr(block, f"act{i}"), name, f"{where}.act{i}") for i in range(1, len(convs) + 1)}
    if len(activations) != 1:
        _refuse(name, f"several activations in the block at {where}")
    projection = block.downsample is not None
    if projection:
        _projection(block.downsample, name, f"{where}.downsample", stride)
    return BlockSpec(kind=kind, widths=tuple(widths), kernel_size=kernel, activation=activations.pop(), stride=stride,
                     projection=projection)


def _projection(shortcut: nn.Module, name: str, where: str, stride: int) -> None:
    """timm's downsample_conv: Sequential(1x1 conv with the block's stride, BN), resnas's projection."""
    if type(shortcut) is not nn.Sequential or len(shortcut) != 2:
        _refuse(name, f"an average-pool shortcut at {where} (avg_down, timm's d variants)")
    kernel, shortcut_stride, _ = _conv(shortcut[0], name, f"{where}.0")
    if kernel != 1 or shortcut_stride != stride:
        _refuse(name, f"a {kernel}x{kernel}/{shortcut_stride} shortcut conv at {where} (down_kernel_size)")
    _batch_norm(shortcut[1], name, f"{where}.1")


def _head(model: ResNet, name: str) -> int:
    pool = model.global_pool
    if type(pool) is not SelectAdaptivePool2d or pool.pool_type != "avg" or type(pool.flatten) is not nn.Flatten:
        _refuse(name, f"global pooling {getattr(pool, 'pool_type', type(pool).__name__)!r} (resnas pools by average)")
    if type(model.fc) is not nn.Linear:
        _refuse(name, "no linear classifier (num_classes=0)")
    return model.fc.out_features


# ---- creating the timm model ------------------------------------------------------------------------------------
def _refuse_early(parsed: PretrainedSource, source: str) -> None:
    try:
        with torch.device("meta"):
            skeleton = timm.create_model(parsed.name, pretrained=False)
    except RuntimeError as error:  # timm's "Unknown model"
        raise PretrainedError(f"timm cannot build {parsed.name!r} ({error}); give a timm ResNet name such as "
                              f"resnet50 (timm.list_models('resnet*') lists them).") from None
    timm_resnet_spec(skeleton, source)


def _create(parsed: PretrainedSource, source: str) -> nn.Module:
    if parsed.weights_file is not None:
        return _create_from_file(parsed, source)
    try:
        return timm.create_model(parsed.timm_name, pretrained=True)
    except OSError as error:  # no network and nothing cached (huggingface_hub's errors are OSErrors), or no folder
        if parsed.kind == "local-dir":
            raise PretrainedError(f"{source} could not be read ({error}); give a folder timm.models.save_for_hf "
                                  f"wrote.") from None
        raise PretrainedError(f"{source}'s weights are neither downloadable here (no network?) nor in the Hugging "
                              f"Face cache; where there is network, save them with timm.models.save_for_hf("
                              f"timm.create_model('{parsed.timm_name}', pretrained=True), FOLDER) and use "
                              f"local-dir:FOLDER.") from None
    except RuntimeError as error:  # an unknown model, or one without pretrained weights
        raise PretrainedError(f"timm could not create {source} with pretrained weights ({error}); give a timm "
                              f"ResNet that has them, or its weights as timm:NAME@FILE.") from None


def _create_from_file(parsed: PretrainedSource, source: str) -> nn.Module:
    path = Path(parsed.weights_file).expanduser()
    try:
        weights = load_state_dict(str(path), weights_only=True)  # safetensors or a torch checkpoint, no pickled code
    except (OSError, RuntimeError, ValueError) as error:
        raise PretrainedError(f"{path} could not be read as weights ({error}); give a .safetensors file or a "
                              f"torch checkpoint of {parsed.name}.") from None
    # The file's own head and input channels decide the architecture's (a fine-tuned net has its own classes).
    arguments = {}
    if getattr(weights.get("fc.weight"), "dim", lambda: 0)() == 2:
        arguments["num_classes"] = weights["fc.weight"].shape[0]
    if getattr(weights.get("conv1.weight"), "dim", lambda: 0)() == 4:
        arguments["in_chans"] = weights["conv1.weight"].shape[1]
    model = timm.create_model(parsed.name, pretrained=False, **arguments)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).split("\n\t")[1] if "\n\t" in str(error) else str(error)
        raise PretrainedError(f"{path} does not hold {parsed.name}'s weights ({first.strip()}); give the "
                              f"architecture the file was saved from.") from None
    return model


# ---- the checks and the changes -----------------------------------------------------------------------------
def _check_same_function(model: nn.Module, spec: ArchSpec, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load the weights strictly into resnas's network and compare logits: anything the walk above missed fails
    here, not as a silently different start net."""
    ours = build_model(spec).eval()
    try:
        ours.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise PretrainedError(f"{source}'s weights do not map onto resnas's layers ({str(error).splitlines()[0]}); "
                              f"start from a plain timm ResNet instead.") from None
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, spec.in_channels, CHECK_SIZE, CHECK_SIZE, generator=generator)
    with torch.no_grad():
        theirs, mine = model(images), ours(images)
    if not torch.allclose(mine, theirs, rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE):
        gap = (mine - theirs).abs().max().item()
        raise PretrainedError(f"{source} imported as a network whose logits differ from timm's by {gap:.2g}; start "
                              f"from a plain timm ResNet instead (and report the model name).")


def _adapt(spec: ArchSpec, state_dict: dict[str, torch.Tensor], num_classes: int | None,
           in_channels: int | None) -> tuple[ArchSpec, dict[str, torch.Tensor], tuple[str, ...]]:
    changes = []
    if in_channels is not None and in_channels != spec.in_channels:
        state_dict["conv1.weight"] = adapt_input_conv(in_channels, state_dict["conv1.weight"], spec.in_channels)
        changes.append(f"conv1 adapted from {spec.in_channels} to {in_channels} input channels "
                       f"(timm's adapt_input_conv)")
        spec = replace(spec, in_channels=in_channels)
    if num_classes is not None and num_classes != spec.head.num_classes:
        head = nn.Linear(spec.num_features, num_classes)  # build_model's init for a new head
        state_dict["fc.weight"], state_dict["fc.bias"] = head.weight.detach(), head.bias.detach()
        changes.append(f"fc re-initialised for {num_classes} classes (was {spec.head.num_classes})")
        spec = replace(spec, head=replace(spec.head, num_classes=num_classes))
    return spec, state_dict, tuple(changes)


def _origin(parsed: PretrainedSource, source: str, model: nn.Module, changes: tuple[str, ...]) -> NetworkOrigin:
    config = dict(getattr(model, "pretrained_cfg", None) or {})
    if parsed.weights_file is not None:  # timm's cfg describes its own weights, not the file's
        name, _, tag = parsed.name.partition(".")
        return NetworkOrigin(source, name, tag or None, None, _sha256(Path(parsed.weights_file).expanduser()), changes)
    hub_id = parsed.name if parsed.kind == "hf-hub" else config.get("hf_hub_id")
    if parsed.kind == "local-dir":
        weights = next((Path(parsed.name, f) for f in WEIGHT_FILES if Path(parsed.name, f).is_file()), None)
        hub_id = None  # the folder's config may name the Hub repo its weights once came from; these are the folder's
    else:
        weights = _cached_hub_file(hub_id)
    architecture = config.get("architecture") or parsed.name.partition(".")[0]
    return NetworkOrigin(source, architecture, config.get("tag") or None, hub_id,
                         _sha256(weights) if weights else None, changes)


def _cached_hub_file(hub_id: str | None) -> Path | None:
    """The file timm just loaded from the Hugging Face cache, when it came from there."""
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for filename in WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["ImportedNetwork", "import_timm_resnet", "timm_resnet_spec"]
