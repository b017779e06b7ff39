"""resnas's NNI-free modules, loaded on a machine without NNI (the lent GPU machine has torch, timm and Lightning,
not NNI).

The method packages' `__init__` import their tuner (`strategies/proxyless/__init__.py: from .tuner import
ProxylessTuner`, which does `import nni`; the multi-trial methods' tuners import `strategies.multi_trial`, whose
`__init__` imports `MultiTrialTuner`, which does `import nni`), so `import strategies.proxyless.search` fails
there although search.py itself needs no NNI. `load(name)` imports it anyway: a package whose `__init__` stops
only because NNI is missing is kept as far as its `__init__` got (its folder is on `__path__` before `__init__`
runs, so its NNI-free submodules load). `SKIPPED_INITS` says which packages were cut short and why: the JSON of
gpu_check.py carries it, so the lead sees which import blocks. With NNI installed nothing changes.

The supernet of ProxylessNAS is NNI's too (`search_spaces.spaces.ScopedResNet50` is an NNI ModelSpace and
`install_binary_gates` reads NNI's LayerChoice): `gated_scoped_resnet50` builds the same gated network from the
builder's modules and the torch-free `ScopeChoices`, which is what `install_binary_gates(ScopedResNet50(...))` makes
(tests/test_gpu_check.py compares the two where NNI is installed).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

REPOSITORY = Path(__file__).resolve().parents[1]

SKIPPED_INITS: dict[str, str] = {}  # package -> the import error its __init__ raised
PACKAGES = ("strategies.",)  # where a package __init__ may import NNI; search_spaces/trainers never do


def _nni_missing(error: ImportError) -> bool:
    return isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == "nni"


class _InitWithoutNni(importlib.abc.Loader):
    """Runs a package's __init__; if it stops because NNI is missing, the package stays importable as what it got
    that far (its __path__ is set before __init__ runs, so its submodules still load)."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            self.loader.exec_module(module)
        except ImportError as error:
            # A name from a package that was itself cut short for NNI counts as NNI missing too.
            if not (_nni_missing(error) or error.name in SKIPPED_INITS):
                raise
            SKIPPED_INITS[module.__name__] = f"{_blocking_line(error)}: {type(error).__name__}: {error}"


def _blocking_line(error: BaseException) -> str:
    """`path:line  source` of the repository's innermost frame of the failed import: the import that needs NNI."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if Path(frame.filename).is_file() and Path(frame.filename).resolve().is_relative_to(REPOSITORY)]
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).resolve().relative_to(REPOSITORY)}:{frame.lineno}  {(frame.line or '').strip()}"


class _PackagesWithoutNni(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path, target=None):
        if not fullname.startswith(PACKAGES):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None:
            return None  # a plain module: the ordinary finders load it
        spec.loader = _InitWithoutNni(spec.loader)
        return spec


def load(name: str) -> ModuleType:
    """`importlib.import_module(name)`, where any package on the way (or imported by the way) under PACKAGES whose
    __init__ needs NNI is left as far as it got instead of failing."""
    if not any(isinstance(finder, _PackagesWithoutNni) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PackagesWithoutNni())
    return importlib.import_module(name)


def gated_scoped_resnet50(scope: str, num_classes: int = 10, stem: str = "imagenet", width_multiplier: float = 1.0,
                          in_channels: int = 3):
    """(network, GateBank): ResNet-50 whose bottlenecks inside `scope` carry binary gates over the middle-conv
    kernel and the activation, as install_binary_gates(ScopedResNet50(...)) makes it, without NNI."""
    import torch.nn as nn

    from search_spaces.blocks import activation_layer, conv2d
    from search_spaces.builder import build_model, init_resnet_weights
    from search_spaces.choices import ScopeChoices, kernel_name

    gates = load("strategies.proxyless.binary_gates")
    choices = ScopeChoices.resnet50(scope, num_classes, stem, width_multiplier, in_channels)
    model = build_model(choices.base_spec)
    sites: list[tuple[nn.Module, str, str, list[str], list[nn.Module]]] = []  # parent, attribute, label, names, modules
    for stage_index, block_index, block in choices.searched_blocks():
        module = model.get_submodule(f"layer{stage_index}.{block_index}")
        prefix = f"layer{stage_index}_{block_index}"
        # Registration order of a Bottleneck (act1 before conv2): the order install_binary_gates meets the labels.
        for site in ("act1", "conv2", "act2", "act3"):
            if site == "conv2":
                names = [kernel_name(k) for k in choices.kernels]
                candidates = [conv2d(block.widths[0], block.widths[1], k, block.stride) for k in choices.kernels]
                sites.append((module, site, f"{prefix}_kernel", names, candidates))
            else:  # never in place: the arch phase runs the other candidates on the same input (resnet_spaces.py)
                names = list(choices.activations)
                sites.append((module, site, f"{prefix}_act", names, [activation_layer(n)() for n in names]))
    candidates: dict[str, list] = {}
    for _, _, label, names, _ in sites:
        candidates.setdefault(label, names)
    bank = gates.GateBank(candidates)
    for parent, attribute, label, names, modules in sites:
        setattr(parent, attribute, gates.BinaryGateChoice(label, names, modules, bank))
    init_resnet_weights(model)  # as ScopedResNet50 initialises every candidate
    return model, bank
