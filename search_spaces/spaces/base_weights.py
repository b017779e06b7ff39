"""A supernet (or one of its paths) initialised from its base network's weights: a pretrained start.

Every candidate of a LayerChoice takes the base network's layer at that place: a conv candidate with a larger
kernel takes the base 3x3 kernel zero-padded (edits.state_dicts.enlarge_kernel: the same function), and
parameter-free candidates (the activations) share the convs and BNs around them, so every path of the supernet
starts as the base network with some kernels grown and activations swapped; the all-k3/ReLU path *is* it.

    imported = import_timm_resnet("local-dir:FOLDER", num_classes=10)
    require_base_network(imported.spec, space.base_spec, "local-dir:FOLDER")
    load_base_weights(space, imported.state_dict)                 # before install_binary_gates
    model.load_state_dict(base_weights_for(model, imported.state_dict))  # a found path, build_model(spec)
"""

from __future__ import annotations

from typing import Mapping

import torch
from nni.nas.nn.pytorch import LayerChoice
from torch import nn

from ..edits.state_dicts import StateDictError, enlarge_kernel
from ..errors import PretrainedError
from ..spec import ArchSpec

Tensors = Mapping[str, torch.Tensor]


def require_base_network(start: ArchSpec, base: ArchSpec, source: str, fix: str) -> None:
    """Refuse (one sentence, naming `fix`) a start network that is not `base`: its stem, stages, input channels
    and classes (the import has fitted the last two to the data already). The head's dropout may differ."""
    if start.stem == base.stem and start.stages == base.stages and start.in_channels == base.in_channels \
            and start.head.num_classes == base.head.num_classes:
        return
    raise PretrainedError(f"start {source} is a network of stage depths {list(start.depths)}, stem width "
                          f"{start.stem.out_channels} ({start.stem.kernel_size}x{start.stem.kernel_size}/"
                          f"{start.stem.stride}) and {start.num_features} features, not the search space's base "
                          f"network (depths {list(base.depths)}, stem width {base.stem.out_channels} "
                          f"({base.stem.kernel_size}x{base.stem.kernel_size}/{base.stem.stride}), "
                          f"{base.num_features} features); {fix}.")


def base_weights_for(model: nn.Module, weights: Tensors) -> dict[str, torch.Tensor]:
    """A state dict for `model` (a model space with LayerChoices, or a plain network of the base's layout) from
    the base network's `weights`: every LayerChoice candidate's tensors from the base layer at the choice's place,
    kernels zero-padded where the candidate's is larger. Loads strictly into `model`."""
    choices = [name for name, module in model.named_modules() if isinstance(module, LayerChoice)]
    used, mapped = set(), {}
    for key, target in model.state_dict().items():
        source = _base_key(key, choices)
        if source not in weights:
            raise PretrainedError(f"the start network has no weights for {source}; start from the search space's "
                                  f"base network.")
        used.add(source)
        mapped[key] = _fitted(weights[source], target, key)
    unused = sorted(set(weights) - used)
    if unused:
        raise PretrainedError(f"the start network's {unused[0]} has no place in the search space; start from the "
                              f"search space's base network.")
    return mapped


def load_base_weights(model: nn.Module, weights: Tensors) -> None:
    """Initialise `model` (before the binary gates replace its LayerChoices) from the base network's weights."""
    model.load_state_dict(base_weights_for(model, weights), strict=True)


def _base_key(key: str, choices: list[str]) -> str:
    """layer3.0.conv2.k5.weight -> layer3.0.conv2.weight: a candidate's tensor is the base layer's."""
    owner = max((name for name in choices if key.startswith(f"{name}.")), key=len, default=None)
    if owner is None:
        return key
    _candidate, _, rest = key[len(owner) + 1:].partition(".")
    return f"{owner}.{rest}"


def _fitted(tensor: torch.Tensor, target: torch.Tensor, key: str) -> torch.Tensor:
    if tensor.shape == target.shape:
        return tensor.detach().clone()
    if tensor.dim() == 4 and tensor.shape[:2] == target.shape[:2] and target.shape[-1] == target.shape[-2]:
        try:
            return enlarge_kernel(tensor.detach(), target.shape[-1]).clone()
        except StateDictError as error:
            raise PretrainedError(f"{key}: {error}") from None
    raise PretrainedError(f"the start network's {key} has shape {tuple(tensor.shape)} where the search space has "
                          f"{tuple(target.shape)}; start from the search space's base network.")


__all__ = ["base_weights_for", "load_base_weights", "require_base_network"]
