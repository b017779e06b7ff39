"""Settings of a trial that trains one network an NNI built-in tuner (Random, TPE, Evolution, GridSearch) sampled
from a resnas space, and the space's decisions, which `resnas space` writes as NNI's `searchSpace`.

Built-in tuners hand a trial only the sampled {label: value} dict, so the fixed settings reach it in a file the
trial command names (`python -m strategies.trial --settings FILE`, relative to trialCodeDirectory): it travels
with the trial code to remote workers (NNI uploads trialCodeDirectory, not the environment), `resnas validate`
checks it and the searchSpace against each other before launch, and the dashboard's hyperparameters stay the
architecture alone (single-valued choices would list every setting there, and TPE would model them).

No torch here: `resnas validate` and `resnas space` read these without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from search_spaces.choices import ChoiceLabels, DepthChoices, ScopeChoices, nni_search_space
from search_spaces.spec import SpecError
from trainers.datasets import dataset_entry

from ..data import DataSettings
from ..proxyless.settings import ProxylessSettings
from ..settings import SettingsError, choices, parse_settings
from ..stagewise.settings import StagewiseSettings

# scope: kernel x activation of ResNet-50's bottlenecks inside a scope (ProxylessNAS's space); cifar_depths: the
# stage depths of the CIFAR ResNet (the stage-wise search's space); resnet50_depths: the stage depths of a
# ResNet-50-style bottleneck layout.
SpaceName = Literal["scope", "cifar_depths", "resnet50_depths"]
SPACES = choices(SpaceName)
# Each space is trained with the recipe of the method that searches it: ProxylessNAS's retrain (SGD Nesterov,
# cosine, retrain_epochs) for the ResNet-50 layouts, the stage-wise candidate training (SGD Nesterov, step decay,
# epochs) for the CIFAR ResNet. The recipe's settings are that method's classArgs.
RECIPES: dict[str, type[DataSettings]] = {"proxyless": ProxylessSettings, "stagewise": StagewiseSettings}
PAIRED_RECIPE: dict[str, str] = {"scope": "proxyless", "resnet50_depths": "proxyless", "cifar_depths": "stagewise"}
DEPTH_SPACES = ("cifar_depths", "resnet50_depths")


@dataclass(frozen=True)
class SampledSettings:
    space: SpaceName
    method_settings: dict[str, Any]  # the paired method's classArgs: data, widths or scope, and the recipe
    recipe: str | None = None  # None: the space's paired method (PAIRED_RECIPE); any other value is refused
    depth_ranges: tuple[tuple[int, int], ...] | None = None  # depth spaces: (min, max) blocks per stage

    def check(self, where: str) -> None:
        if self.recipe is not None and self.recipe != PAIRED_RECIPE[self.space]:
            raise SettingsError(f"{where}: space {self.space} is trained with the {PAIRED_RECIPE[self.space]} recipe, "
                                f"not {self.recipe!r}; drop recipe or set it to {PAIRED_RECIPE[self.space]}.")
        if (self.depth_ranges is None) == (self.space in DEPTH_SPACES):
            wanted = "needs" if self.space in DEPTH_SPACES else "takes no"
            raise SettingsError(f"{where}: space {self.space} {wanted} depth_ranges (one [min, max] per stage).")
        if not isinstance(self.method_settings, dict):
            raise SettingsError(f"{where}: method_settings must be a mapping of the {self.recipe_name} method's "
                                f"settings (its classArgs keys).")
        if self.depth_ranges is not None:
            if any(not isinstance(pair, (list, tuple)) or len(pair) != 2 for pair in self.depth_ranges):
                raise SettingsError(f"{where}: depth_ranges must list one [min, max] pair per stage, "
                                    f"got {list(self.depth_ranges)}.")
            # JSON and YAML give lists of lists; the frozen field keeps hashable pairs (set once, while parsing)
            object.__setattr__(self, "depth_ranges", tuple(tuple(pair) for pair in self.depth_ranges))
        paired = self.paired(f"{where}: method_settings")
        if self.space == "cifar_depths" and len(self.depth_ranges) != len(paired.widths):
            raise SettingsError(f"{where}: depth_ranges gives {len(self.depth_ranges)} stages for the "
                                f"{len(paired.widths)} widths of method_settings; give one range per width.")
        try:
            self.choices()
        except SpecError as error:
            raise SettingsError(f"{where}: {error}") from None

    @property
    def recipe_name(self) -> str:
        return PAIRED_RECIPE[self.space]

    def paired(self, where: str = "method_settings") -> DataSettings:
        """The paired method's settings (ProxylessSettings or StagewiseSettings): data, layout and recipe."""
        return parse_settings(RECIPES[self.recipe_name], self.method_settings, where)

    def choices(self, num_classes: int | None = None, in_channels: int | None = None) -> ScopeChoices | DepthChoices:
        """The space's decisions for a dataset of `num_classes` and `in_channels` (default: the dataset's own,
        from the registry's static facts; an image folder's class count is known only where it is)."""
        paired = self.paired()
        info = dataset_entry(paired.dataset).info
        num_classes = num_classes or info.num_classes or 1
        in_channels = in_channels or info.in_channels
        if self.space == "scope":
            return paired.scope_choices(num_classes, in_channels)
        if self.space == "resnet50_depths":
            return DepthChoices.resnet(self.depth_ranges, "bottleneck", None, num_classes, paired.stem,
                                       paired.width_multiplier, in_channels)
        return DepthChoices.resnet(self.depth_ranges, "basic", paired.widths, num_classes, "cifar", 1.0, in_channels)

    def choice_labels(self) -> ChoiceLabels:
        return self.choices().choice_labels()

    def search_space(self) -> dict[str, dict[str, Any]]:
        """NNI's searchSpace of this space: what `resnas space` writes and `resnas validate` compares."""
        return nni_search_space(self.choice_labels())


def parse_sampled_settings(data: dict[str, Any] | None, where: str = "trial settings") -> SampledSettings:
    return parse_settings(SampledSettings, data, where)


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """The settings a built-in tuner's trial command names (a YAML or JSON file), checked, as plain data."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"settings file {path} does not exist; give the path (relative to trialCodeDirectory) "
                            f"of a file like nni_configs/sampled/scope_m_digits.settings.yml.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SettingsError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the syntax.") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping with space and method_settings.")
    parse_sampled_settings(data, str(path))
    return data


def read_settings_file(path: str | Path) -> SampledSettings:
    return parse_sampled_settings(load_settings_file(path), str(path))
