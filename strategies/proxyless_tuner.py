"""ProxylessTuner: NNI customized tuner that issues one ProxylessNAS search trial per search scope.

The search itself is one-shot and runs inside the trial; the tuner only decides which scopes to run, so
`proxyless_scopes.yml` reproduces Table I (s, m, l, f) as four trials at once.
"""

from __future__ import annotations

import logging
from typing import Any

import nni
from nni.tuner import Tuner

from .proxyless_settings import ProxylessSettings
from .settings import SettingsError, parse_settings

logger = logging.getLogger(__name__)
METHOD = "proxyless"


def parse_tuner_args(class_args: dict[str, Any] | None, where: str = "tuner.classArgs") -> list[ProxylessSettings]:
    """classArgs = ProxylessSettings keys, with `scopes: [s, m, ...]` allowed instead of `scope`."""
    class_args = dict(class_args or {})
    scopes = class_args.pop("scopes", None)
    if scopes is None:
        return [parse_settings(ProxylessSettings, class_args, where)]
    if "scope" in class_args:
        raise SettingsError(f"{where}: give either 'scope' or 'scopes', not both.")
    if not isinstance(scopes, list) or not scopes:
        raise SettingsError(f"{where}: scopes must be a non-empty list such as [s, m, l, f].")
    return [parse_settings(ProxylessSettings, {**class_args, "scope": scope}, where) for scope in scopes]


def trial_parameters(settings: ProxylessSettings) -> dict[str, Any]:
    return {"method": METHOD, "settings": settings.to_dict()}


class ProxylessTuner(Tuner):
    def __init__(self, **class_args: Any):
        self.pending = parse_tuner_args(class_args)
        self.issued: dict[int, str] = {}

    def update_search_space(self, search_space: dict) -> None:
        """The scopes come from classArgs; an nnictl searchSpace is not used."""

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if not self.pending:
            raise nni.NoMoreTrialError("every requested search scope has a trial")
        settings = self.pending.pop(0)
        self.issued[parameter_id] = settings.scope
        logger.info("trial %s: ProxylessNAS search over scope %s", parameter_id, settings.scope)
        return trial_parameters(settings)

    def receive_trial_result(self, parameter_id: int, parameters: dict, value: Any, **kwargs: Any) -> None:
        logger.info("scope %s finished: %s", self.issued.get(parameter_id), value)

    def import_data(self, data: list[dict]) -> None:
        """On `nnictl resume`, scopes whose trial already finished are not searched again."""
        finished = set()
        for record in data:
            parameter = record.get("parameter") or {}
            settings = parameter.get("settings") if isinstance(parameter, dict) else None
            if isinstance(settings, dict) and "scope" in settings:
                finished.add(settings["scope"])
        self.pending = [settings for settings in self.pending if settings.scope not in finished]
