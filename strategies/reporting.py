"""How trials report: to NNI inside an experiment, to a list and the log in a notebook; and how metrics read back.

Runners get a Reporter instead of importing nni themselves, so the same runner works without the manager.
Every metric dict carries `default`, the number NNI's dashboard plots and ranks trials by.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol


class Reporter(Protocol):
    def intermediate(self, metrics: dict[str, Any]) -> None: ...

    def final(self, metrics: dict[str, Any]) -> None: ...


class NniReporter:
    def intermediate(self, metrics: dict[str, Any]) -> None:
        import nni

        nni.report_intermediate_result(metrics)

    def final(self, metrics: dict[str, Any]) -> None:
        import nni

        nni.report_final_result(metrics)


class PrintReporter:
    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None

    def intermediate(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        logging.getLogger("resnas.trial").info("epoch metrics: %s", metrics)

    def final(self, metrics: dict[str, Any]) -> None:
        self.result = metrics


def decode_metric(data: Any) -> Any:
    """A reported metric as it comes back from NNI (its REST API, a tuner callback): JSON-encoded, sometimes twice."""
    for _ in range(3):
        if not isinstance(data, str):
            break
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            break
    return data
