"""The one trial entry point every nni_configs/*.yml uses: `python -m strategies.trial`.

It reads its JSON parameters from NNI, picks the method's runner by name, and reports to NNI. Runners get a
Reporter instead of importing nni themselves, so the same runner works in a notebook without the manager.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Protocol


class Reporter(Protocol):
    def intermediate(self, metrics: dict[str, Any]) -> None: ...

    def final(self, metrics: dict[str, Any]) -> None: ...


class NniReporter:
    """Every metric dict carries `default`, the number NNI's dashboard plots and ranks trials by."""

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


Runner = Callable[[dict[str, Any], Path, Reporter], dict[str, Any]]


# method -> (module, function); imported on use so that a trial only loads the method it runs.
RUNNERS: dict[str, tuple[str, str]] = {
    "proxyless": ("strategies.proxyless_trial", "run_proxyless_trial"),
    "hill_climbing": ("strategies.hill_climbing_trial", "run_hill_climbing_trial"),
    "layer_pruning": ("strategies.layer_pruning_trial", "run_layer_pruning_trial"),
}


def _runner(method: Any) -> Runner:
    if method not in RUNNERS:
        raise ValueError(f"trial parameters name method {method!r}; this resnas runs {', '.join(RUNNERS)}.")
    module, function = RUNNERS[method]
    return getattr(importlib.import_module(module), function)


def run_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    runner = _runner(parameters.get("method"))
    output_dir.mkdir(parents=True, exist_ok=True)
    return runner(parameters, output_dir, reporter)


def main() -> int:
    import nni

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parameters = nni.get_next_parameter()
    if not parameters:
        print("no trial parameters: run this through `resnas create` or `nnictl create`.", file=sys.stderr)
        return 2
    # NNI_OUTPUT_DIR is the trial's own folder in the experiment directory (shown in the dashboard).
    output_dir = Path(os.environ.get("NNI_OUTPUT_DIR", "runs/trial"))
    run_trial(parameters, output_dir, NniReporter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
