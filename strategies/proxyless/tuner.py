"""ProxylessTuner: NNI customized tuner that issues one ProxylessNAS search trial per search scope.

The search itself is one-shot and runs inside the trial; the tuner only decides which scopes to run, so
`proxyless_scopes.yml` reproduces Table I (the plain ResNet-50 as scope "none", then s, m, l, f) as five
trials at once.
"""

from __future__ import annotations

import logging
from typing import Any

import nni
from nni.tuner import Tuner

from search_spaces.scopes import BASELINE_SCOPE

from ..payload_guard import guard_dispatcher_payloads
from .settings import parse_tuner_args

logger = logging.getLogger(__name__)


class ProxylessTuner(Tuner):
    method = "proxyless"  # trial parameters carry it; strategies.trial picks the runner by it (methods.METHODS)

    def __init__(self, **class_args: Any):
        guard_dispatcher_payloads()  # before the dispatcher reads its first message from the manager
        self.pending = parse_tuner_args(class_args)
        self.issued: dict[int, str] = {}

    def update_search_space(self, search_space: dict) -> None:
        """The scopes come from classArgs; an nnictl searchSpace is not used."""

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if not self.pending:
            raise nni.NoMoreTrialError("every requested search scope has a trial")
        settings = self.pending.pop(0)
        self.issued[parameter_id] = settings.scope
        if settings.scope == BASELINE_SCOPE:
            how = f"fine-tuned from {settings.start}" if settings.retrain_from == "start" else "retrained"
            logger.info("trial %s: the plain ResNet-50 baseline, %s without a search", parameter_id, how)
        else:
            logger.info("trial %s: ProxylessNAS search over scope %s", parameter_id, settings.scope)
        return {"method": self.method, "settings": settings.to_dict()}

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
