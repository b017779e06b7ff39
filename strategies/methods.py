"""The one registry of resnas methods: what a config's tuner is, how its classArgs parse, which runner a
trial's parameters go to, which figure it draws. Trial dispatch, config validation, `resnas plot` and the
in-process search all read METHODS.

Adding a method: one package (settings, tuner, trial, plot; its `__init__` torch-free, exporting the tuner,
the classArgs parser and `run_trial`), one line below, a YAML under nni_configs/ and tests. A method without a
resnas tuner (`sampled`: NNI's built-in tuners sample its networks) registers only its trial runner.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Callable

from . import hill_climbing, layer_pruning, proxyless, sampled, stagewise
from .plotting import Figure
from .reporting import Reporter

Runner = Callable[[dict[str, Any], Path, Reporter], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    name: str  # what trial parameters carry as "method"
    run_trial: Runner  # parameters, output folder, reporter -> final metrics; imports the trial code on call
    _: KW_ONLY  # the rest by name: a positional tuner once landed in run_trial's place unnoticed
    tuner: type | None = None  # the NNI customized tuner (tuner.className in a config); None: NNI's built-in ones
    parse_class_args: Callable[[dict[str, Any] | None, str], Any] | None = None  # classArgs -> typed settings
    legacy_tuner_paths: tuple[str, ...] = ()  # class paths of experiments created before the method packages

    @property
    def tuner_path(self) -> str | None:
        """How configs name the tuner: the package and the class (strategies.proxyless.ProxylessTuner)."""
        if self.tuner is None:
            return None
        return f"{self.tuner.__module__.rsplit('.', 1)[0]}.{self.tuner.__name__}"

    @property
    def figure(self) -> Figure | None:
        return getattr(self.tuner, "figure", None)


def _registry(*methods: Method) -> dict[str, Method]:
    registry: dict[str, Method] = {}
    for method in methods:
        if method.name in registry:
            raise ValueError(f"method {method.name!r} is registered twice; give each method its own name.")
        if method.tuner is not None and method.tuner.method != method.name:
            raise ValueError(f"{method.tuner.__name__}.method is {method.tuner.method!r}, not {method.name!r}.")
        registry[method.name] = method
    return registry


METHODS: dict[str, Method] = _registry(
    Method("proxyless", proxyless.run_trial, tuner=proxyless.ProxylessTuner,
           parse_class_args=proxyless.parse_tuner_args,
           legacy_tuner_paths=("strategies.proxyless_tuner.ProxylessTuner",)),
    Method("hill_climbing", hill_climbing.run_trial, tuner=hill_climbing.HillClimbingTuner,
           parse_class_args=hill_climbing.parse_hill_climbing_args,
           legacy_tuner_paths=("strategies.hill_climbing_tuner.HillClimbingTuner",)),
    Method("layer_pruning", layer_pruning.run_trial, tuner=layer_pruning.LayerPruningTuner,
           parse_class_args=layer_pruning.parse_layer_pruning_args,
           legacy_tuner_paths=("strategies.layer_pruning_tuner.LayerPruningTuner",)),
    Method("stagewise", stagewise.run_trial, tuner=stagewise.StagewiseTuner,
           parse_class_args=stagewise.parse_stagewise_args),
    Method(sampled.METHOD, sampled.run_trial),
)


def method_of_tuner(class_path: str) -> Method | None:
    """The method whose tuner a config names: by its package path, its module path or a legacy path."""
    for method in METHODS.values():
        if method.tuner is None:
            continue
        module_path = f"{method.tuner.__module__}.{method.tuner.__name__}"
        if class_path in (method.tuner_path, module_path, *method.legacy_tuner_paths):
            return method
    return None


def legacy_module_target(module_name: str) -> str | None:
    """The package that now holds what a legacy tuner module (strategies.hill_climbing_tuner) held, or None."""
    for method in METHODS.values():
        if any(path.rsplit(".", 1)[0] == module_name for path in method.legacy_tuner_paths):
            return method.tuner_path.rsplit(".", 1)[0]
    return None
