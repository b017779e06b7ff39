"""Everything that talks to NNI: one package per method, the multi-trial machinery, the launcher, the CLI.

Experiments created before the method packages existed name their tuner by a flat module
(`strategies.hill_climbing_tuner.HillClimbingTuner`) that NNI's dispatcher imports on `nnictl resume`. Those
names resolve through the method registry (methods.Method.legacy_tuner_paths) by the finder below, which
the import system asks only for modules no file provides.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType


class _LegacyTunerModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path, target=None):
        if not fullname.startswith(__name__ + ".") or fullname.count(".") != 1:
            return None
        from .methods import legacy_module_target

        if legacy_module_target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec) -> ModuleType:
        from .methods import legacy_module_target

        return importlib.import_module(legacy_module_target(spec.name))  # the package itself, not a copy

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the package was imported in create_module."""


if not any(isinstance(finder, _LegacyTunerModules) for finder in sys.meta_path):
    sys.meta_path.append(_LegacyTunerModules())  # last: consulted only when no file matches the name
