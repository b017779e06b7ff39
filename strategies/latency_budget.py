"""The latency settings every method shares (`latency_table`, `latency_target_ms`), and the budget a tuner holds
children to. No torch: NNI's tuner process parses settings and predicts children's latency from the JSON table
(search_spaces/latency_table.py); only measuring missing entries needs torch, and trials do that.

A part the table lacks (NASH widens to any width) is estimated from the table's measured parts of its family when
the tuner predicts; the child's trial measures the part into the table when it runs on the table's device, so
later predictions use the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.errors import LatencyTableError
from search_spaces.latency_table import LatencyTable, Prediction, predict_latency
from search_spaces.spec import ArchSpec

from .settings import SettingsError


@dataclass(frozen=True)
class LatencySettings:
    """Listed before DataSettings among a method's bases, so its check runs before DataSettings' (as
    ArtifactSettings)."""

    # A table made by `resnas latency-table` on the target device; None: latency is not predicted or reported.
    latency_table: str | None = None
    # Children / candidates predicted slower than this are not trained (ProxylessNAS: the loss's target instead).
    latency_target_ms: float | None = None

    def check(self, where: str) -> None:
        inherited = getattr(super(), "check", None)
        if inherited is not None:
            inherited(where)
        if self.latency_target_ms is not None and self.latency_target_ms <= 0:
            raise SettingsError(f"{where}: latency_target_ms must be positive, got {self.latency_target_ms}.")
        if self.latency_target_ms is not None and self.latency_table is None:
            raise SettingsError(f"{where}: latency_target_ms needs a latency_table to predict latency from; make one "
                                f"with `resnas latency-table` and name it.")
        if self.latency_table is not None:
            try:
                LatencyTable.load(self.latency_table)
            except LatencyTableError as error:
                raise SettingsError(f"{where}: {error}") from None

    def check_within_budget(self, spec: ArchSpec, what: str, where: str) -> None:
        """Refuse a network the search must train (its start net) when it is over the target: the methods only
        grow networks, so nothing after it would fit either."""
        from .data import input_size  # the methods' settings are DataSettings too

        budget = self.latency_budget(input_size(self))
        problem = budget.refusal(spec, what) if budget is not None else None
        if problem:
            raise SettingsError(f"{where}: {problem}")

    def latency_budget(self, input_size: tuple[int, int, int]) -> "LatencyBudget | None":
        """The budget children are held to, or None without a target."""
        if self.latency_table is None or self.latency_target_ms is None:
            return None
        return LatencyBudget(Path(self.latency_table), float(self.latency_target_ms), tuple(input_size))


@dataclass(frozen=True)
class LatencyBudget:
    table_path: Path
    target_ms: float
    input_size: tuple[int, int, int]

    def predict(self, spec: ArchSpec) -> Prediction:
        """Reread each time: trials fill the table while the search runs."""
        return predict_latency(spec, LatencyTable.load(self.table_path), self.input_size, estimate_missing=True)

    def fits(self, spec: ArchSpec) -> bool:
        return self.predict(spec).total_ms <= self.target_ms

    def refusal(self, spec: ArchSpec, what: str) -> str | None:
        """Why `what` is not trained (one sentence), or None when it fits."""
        predicted = self.predict(spec).total_ms
        if predicted <= self.target_ms:
            return None
        return (f"{what} is predicted at {predicted:.4g} ms, over latency_target_ms {self.target_ms:g}; raise the "
                f"target or start from a smaller network.")

    def facts(self, spec: ArchSpec) -> dict[str, Any]:
        return self.predict(spec).facts()
