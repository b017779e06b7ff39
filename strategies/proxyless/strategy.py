"""resnas's ProxylessNAS as an NNI 3.0 strategy: `NasExperiment(space, evaluator, ProxylessStrategy()).run()`
on any NNI ModelSpace whose choices are LayerChoices and Repeats (a Repeat's depth being one choice).

How NNI runs it. It is a OneShotStrategy, so `NasExperimentConfig.default` picks the sequential execution
engine and the raw model format: no NNI manager, no web UI, no port; the search runs in the calling process,
inside the evaluator's Lightning Trainer (its max_epochs, accelerator, loggers, callbacks, limit_*_batches),
as NNI's own DARTS and Proxyless do.
- `mutate_model` gates the space in place (binary_gates: the resnas trial's gates, plus Repeat depths).
- NNI's `mutate_evaluator` wraps the evaluator's LightningModule in ProxylessModule and hands Lightning the
  loaders DARTS uses: {"train": ..., "val": ...} to train on (a CombinedLoader), the validation loader alone
  to validate on. Each training batch is one `ProxylessSearch.train_step`, the trial's loop: a weight step on
  "train" and, every arch_update_every-th batch, an architecture step on "val" with the weights frozen.
  Validation scores the argmax path with the evaluator's own metrics, which report to NNI.
- `list_models(limit=k)`, what `NasExperiment.export_top_models(top_k=k)` calls, gives the k most probable
  architectures (top_k.py's best-first heap), argmax first; `formatter="instance"` builds a path with the
  supernet's weights, as NNI's one-shot export does.

From the evaluator come the data, the loss (its module's `criterion`), the metrics and the Trainer; the
optimisers are the trial's (the paper's): SGD with Nesterov momentum and a cosine over max_epochs for the
weights, Adam for the gates. The evaluator's own optimizer and learning rate are not used.
"""

from __future__ import annotations

import copy
import importlib
import dataclasses
import math
import warnings
from collections import defaultdict
from typing import Any, Callable, Iterator

import torch
from torch import nn

# NNI 3.0 walks torch.nn at import and warns about every class newer than itself (harmless noise).
warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module", category=RuntimeWarning)
importlib.import_module("nni.nas.strategy")  # first: importing nni.nas.oneshot.pytorch.strategy before it leaves
# NNI's public DARTS/Proxyless/... as ImportFailedStrategy stubs (a circular import NNI swallows)
from nni.nas.evaluator.pytorch.lightning import LightningModule  # noqa: E402
from nni.nas.nn.pytorch import ModelSpace  # noqa: E402
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule  # noqa: E402
from nni.nas.oneshot.pytorch.strategy import OneShotStrategy  # noqa: E402
from nni.nas.space import ModelStatus, RawFormatModelSpace  # noqa: E402

from .binary_gates import BinaryGateChoice, BinaryGateRepeat, GateBank, install_binary_gates  # noqa: E402
from .search import ProxylessSearch  # noqa: E402
from .settings import GRADIENT_ESTIMATORS, ProxylessSearchConfig  # noqa: E402
from .top_k import RankedArchitecture, top_k_architectures  # noqa: E402

Scope = tuple[tuple[str, frozenset], ...]  # the (label, candidate indices) conditions under which a gate runs
TRAINER_PRECISIONS = ("32-true", "32")  # the search runs its own mixed precision (ProxylessSearchConfig.precision)


class ProxylessStrategy(OneShotStrategy):
    """ProxylessNAS with binary gates. `settings` override fields of `config` (a ProxylessSearchConfig: lr,
    momentum, weight_decay, arch_lr, arch_update_every, gradient_estimator, flops_penalty, input_size, seed,
    precision, channels_last); total_epochs is the evaluator's max_epochs. FLOPs are counted only at a given
    input_size (as NNI's profilers take a dummy input), so flops_penalty needs it."""

    def __init__(self, config: ProxylessSearchConfig | None = None, **settings: Any):
        super().__init__()
        names = {field.name for field in dataclasses.fields(ProxylessSearchConfig)} - {"total_epochs"}
        if set(settings) - names:
            raise TypeError(f"ProxylessStrategy has no setting {', '.join(sorted(set(settings) - names))}; "
                            f"use {', '.join(sorted(names))}.")
        self.config = dataclasses.replace(config or ProxylessSearchConfig(input_size=None), **settings)
        if self.config.gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(f"unknown gradient_estimator {self.config.gradient_estimator!r}; "
                             f"use {' or '.join(GRADIENT_ESTIMATORS)}.")
        if self.config.flops_penalty and self.config.input_size is None:
            raise ValueError("flops_penalty counts FLOPs at input_size; give input_size=(channels, height, width).")
        self.bank: GateBank | None = None
        self.gated: ModelSpace | None = None

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in dataclasses.asdict(self.config).items())

    # ---- what NNI's OneShotStrategy asks of a one-shot method ---------------------------------------------
    def mutate_model(self, model: ModelSpace) -> ModelSpace:
        if not isinstance(model, ModelSpace):
            raise TypeError(f"ProxylessStrategy searches an NNI ModelSpace, got {type(model).__name__}; "
                            "derive the space from nni.nas.nn.pytorch.ModelSpace.")
        if any(isinstance(module, (BinaryGateChoice, BinaryGateRepeat)) for module in model.modules()):
            raise ValueError("this space was gated by an earlier search (one-shot strategies change the space in "
                             "place); build a fresh space for each experiment.")
        self.bank = install_binary_gates(model)
        leftover = [f"{name} ({type(module).__name__})" for name, module in model.named_mutable_descendants()
                    if module.simplify()] + [repr(mutable) for mutable in model.mutables]
        if leftover:
            raise ValueError(f"ProxylessStrategy searches LayerChoices and Repeats only, but {', '.join(leftover)} "
                             "hold other choices; write them as LayerChoices, or use NNI's Proxyless or DARTS.")
        repeats = [gate.label for gate in model.modules() if isinstance(gate, BinaryGateRepeat)]
        if self.config.flops_penalty and repeats:
            raise ValueError(f"flops_penalty counts LayerChoice candidates only and would ignore the depth of "
                             f"{', '.join(repeats)}; set flops_penalty=0 for a space with Repeats.")
        self.gated = model
        return model

    def configure_oneshot_module(self, training_module: LightningModule) -> BaseOneShotLightningModule:
        if self.bank is None:
            raise RuntimeError("the space is not gated yet; call mutate_model(space) before configuring the module.")
        return ProxylessModule(training_module, self.bank, self.config)

    def train_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        return {"train": train_dataloader_fn(), "val": val_dataloader_fn()}  # a CombinedLoader in Lightning

    def val_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        return val_dataloader_fn()

    # ---- results --------------------------------------------------------------------------------------
    def export_probs(self) -> dict[str, dict[Any, float]]:
        """{label: {value: probability}}, in float64 from the alphas (NNI's export_probs format)."""
        return self._bank().ranking_probabilities()

    def top_architectures(self, top_k: int = 1) -> list[RankedArchitecture]:
        """The top_k most probable architectures, argmax first, each with its probability: the product over
        every label of its value's probability. A block past the chosen depth does not change the network, so
        its labels keep their argmax: the architectures are distinct networks, each at its most probable sample."""
        if self.gated is None:
            raise RuntimeError("the space is not gated yet; run the experiment (or mutate_model) first.")
        probabilities = self.export_probs()
        ranked = _scope_top(_scopes(self.gated, self._bank().labels), (), probabilities, top_k)
        return [RankedArchitecture(rank, {label: sample[label] for label in probabilities},
                                   math.prod(probabilities[label][sample[label]] for label in probabilities), log_p)
                for rank, (log_p, sample) in enumerate(ranked, start=1)]

    def export_top_models(self, top_k: int = 1) -> list[dict[str, Any]]:
        """NNI samples {label: value} of the top_k most probable architectures, argmax first."""
        return [ranked.sample for ranked in self.top_architectures(top_k)]

    def list_models(self, sort: bool = True, limit: int | None = 1) -> Iterator[RawFormatModelSpace]:
        """The `limit` most probable architectures, most probable first, whatever `sort` says."""
        if limit is None:
            raise ValueError("ProxylessStrategy ranks architectures by gate probability; give limit (top_k) a number.")
        for sample in self.export_top_models(limit):
            model = SupernetPath(self.gated, self.model_space.evaluator)
            model.sample, model.status = sample, ModelStatus.Frozen
            yield model

    def _bank(self) -> GateBank:
        if self.bank is None:
            raise RuntimeError("the space is not gated yet; run the experiment (or mutate_model) first.")
        return self.bank


class ProxylessModule(BaseOneShotLightningModule):
    """The evaluator's LightningModule trained by ProxylessSearch, in the role of NNI's one-shot modules."""

    def __init__(self, training_module: LightningModule, bank: GateBank, config: ProxylessSearchConfig):
        super().__init__(training_module)
        self.gates = bank  # registered here, not in the space: Lightning moves and checkpoints the alphas too
        self.search_config = config
        self.search: ProxylessSearch | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage == "fit" and self.search is None:
            self.search = ProxylessSearch(self.model, self._fit_config(), self.trainer.strategy.root_device,
                                          bank=self.gates, criterion=self._criterion())

    def _fit_config(self) -> ProxylessSearchConfig:
        if self.trainer.world_size > 1:
            raise ValueError(f"the Trainer runs {self.trainer.world_size} processes, but ProxylessStrategy searches on "
                             "one device; give the evaluator devices=1.")
        if str(self.trainer.precision) not in TRAINER_PRECISIONS:
            raise ValueError(f"the Trainer's precision is {self.trainer.precision}, but ProxylessStrategy runs its "
                             "own; leave the Trainer at 32 and pass precision to ProxylessStrategy instead.")
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ValueError("ProxylessStrategy anneals the weights' learning rate over max_epochs; give the "
                             "evaluator max_epochs.")
        return dataclasses.replace(self.search_config, total_epochs=epochs)

    def _criterion(self):
        criterion = getattr(self.training_module, "criterion", None)
        if not callable(criterion):
            raise TypeError("ProxylessStrategy takes the loss from the evaluator module's criterion(outputs, "
                            "targets); use NNI's Classification or Regression, or give your module a criterion.")
        return criterion

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.search.weight_optimizer, self.search.arch_optimizer]

    def on_train_start(self) -> None:
        # The search steps Lightning's wrappers of its own optimisers, so Lightning counts the steps (global_step,
        # max_steps, checkpoint names) as it does for NNI's DARTS.
        self.search.weight_optimizer, self.search.arch_optimizer = self.optimizers()
        super().on_train_start()

    def on_train_epoch_start(self) -> None:
        self.search.epoch = self.trainer.current_epoch
        self.search.start_epoch()
        super().on_train_epoch_start()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.search.train_step(_pair(batch["train"]), lambda: _pair(batch["val"]))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_probs(self.export_probs())  # NNI's prob/<label>/<value> keys
        super().on_train_epoch_end()

    def on_validation_epoch_start(self) -> None:
        self.gates.resample("argmax")  # validation scores the argmax path, as the trial's evaluate does
        self.training_module.on_validation_epoch_start()

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self.training_module.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self.training_module.on_validation_epoch_end()  # NNI's evaluators report intermediate results here

    def export(self) -> dict[str, Any]:
        return self.gates.argmax_sample()

    def export_probs(self) -> dict[str, dict[Any, float]]:
        return self.gates.ranking_probabilities()


class SupernetPath(RawFormatModelSpace):
    """One exported architecture; `executable_model()` is its path with the supernet's weights."""

    def executable_model(self) -> nn.Module:
        return freeze_path(self.model_space, self.sample)


def freeze_path(supernet: nn.Module, sample: dict[str, Any]) -> nn.Module:
    """A copy of the gated `supernet` with every gate replaced by what `sample` picks: a LayerChoice's candidate,
    a Repeat's first `depth` blocks as an nn.Sequential (the modules and names NNI's freeze gives). Only the
    path is copied (NNI's freeze deep-copies every candidate first): a view of it is built from shallow copies
    of the modules above a gate, then deep-copied once (shared modules stay shared)."""

    def path(module: nn.Module) -> nn.Module:
        if isinstance(module, BinaryGateChoice):
            return path(module.candidates[list(module.names).index(sample[module.label])])
        if isinstance(module, BinaryGateRepeat):
            return nn.Sequential(*(path(block) for block in module.blocks[: sample[module.label]]))
        # _modules, not named_children(): that skips a module registered twice, and None entries.
        children = {name: child if child is None else path(child) for name, child in module._modules.items()}
        if all(children[name] is child for name, child in module._modules.items()):
            return module  # no gate below
        view = copy.copy(module)
        view._modules = children
        return view

    return copy.deepcopy(path(supernet))


def _pair(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(f"ProxylessStrategy trains on (inputs, targets) batches, got a {type(batch).__name__}; "
                    "make the evaluator's dataloaders yield pairs.")


# ---- the k most probable architectures of a space with nested choices -------------------------------------
def _scopes(model: nn.Module, labels: list[str]) -> dict[Scope, list[str]]:
    """Where each label decides: a label inside candidate i of choice L (or block b of Repeat L) only counts
    when L picks i (a depth over b). A label used at several scopes decides at their common prefix; a
    condition whose label decides elsewhere (a shared Repeat) is dropped, so the label counts more often."""
    sites: dict[str, list[Scope]] = defaultdict(list)

    def visit(module: nn.Module, scope: Scope) -> None:
        if isinstance(module, BinaryGateChoice):
            sites[module.label].append(scope)
            for index, candidate in enumerate(module.candidates):
                visit(candidate, scope + ((module.label, frozenset([index])),))
        elif isinstance(module, BinaryGateRepeat):
            sites[module.label].append(scope)
            for block_index, block in enumerate(module.blocks):
                deeper = frozenset(i for i, depth in enumerate(module.depths) if depth > block_index)
                visit(block, scope + ((module.label, deeper),))
        else:
            for child in module.children():
                visit(child, scope)

    visit(model, ())
    common = {label: _common_prefix(sites[label]) for label in labels}
    placed: dict[str, Scope] = {}
    for label in sorted(labels, key=lambda label: len(common[label])):  # a condition's label is placed first
        kept: Scope = ()
        for condition in common[label]:
            if placed.get(condition[0]) == kept:
                kept += (condition,)
        placed[label] = kept
    by_scope: dict[Scope, list[str]] = defaultdict(list)
    for label in labels:
        by_scope[placed[label]].append(label)
    return by_scope


def _common_prefix(scopes: list[Scope]) -> Scope:
    prefix = scopes[0]
    for scope in scopes[1:]:
        length = next((i for i, (a, b) in enumerate(zip(prefix, scope)) if a != b), min(len(prefix), len(scope)))
        prefix = prefix[:length]
    return prefix


Ranked = list[tuple[float, dict[str, Any]]]  # (log probability, sample), best first


def _scope_top(by_scope: dict[Scope, list[str]], scope: Scope, probabilities: dict, k: int) -> Ranked:
    """The k best samples of the labels deciding at `scope` and below: a product of independent factors."""
    return _product({label: _label_top(by_scope, scope, label, probabilities, k) for label in by_scope[scope]}, k)


def _label_top(by_scope: dict[Scope, list[str]], scope: Scope, label: str, probabilities: dict, k: int) -> Ranked:
    """The k best samples of `label` with the scopes it conditions: the active ones' best k, the inactive
    ones' argmax."""
    children = [child for child in by_scope if len(child) == len(scope) + 1 and child[:-1] == scope
                and child[-1][0] == label]
    tops = {child: _scope_top(by_scope, child, probabilities, k) for child in children}
    ranked: Ranked = []
    for index, (value, probability) in enumerate(probabilities[label].items()):
        own = [(math.log(probability) if probability > 0 else -math.inf, {label: value})]
        factors = {"": own, **{repr(child): tops[child] if index in child[-1][1] else tops[child][:1] for child in children}}
        ranked += _product(factors, k)
    ranked.sort(key=lambda entry: -entry[0])  # stable: ties keep the candidate order (torch's argmax first)
    return ranked[:k]


def _product(factors: dict[str, Ranked], k: int) -> Ranked:
    """The k best combinations of one entry per factor, by top_k.py's heap (entries stand in for values)."""
    best = top_k_architectures({name: {position: math.exp(log_p) for position, (log_p, _) in enumerate(entries)}
                                for name, entries in factors.items()}, k)
    ranked: Ranked = []
    for architecture in best:
        sample: dict[str, Any] = {}
        for name, position in architecture.sample.items():
            sample.update(factors[name][position][1])
        ranked.append((architecture.log_probability, sample))
    return ranked
