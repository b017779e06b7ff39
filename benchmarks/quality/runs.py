"""One run of the benchmark (a method or a baseline, one seed): measured, recorded, resumable; and the pieces the
pairs share: the budget-limited search over sampled networks, a network trained for a given budget, and a
one-line description of what a run returned.

Selection is always on validation accuracy; the test split is read once per run, for the network it returns.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trainers.atomic import atomic_write_text
from trainers.budget import measuring, training_flops

logger = logging.getLogger("search_quality")
RESULTS_FILE = "results.json"


class Results:
    """results.json: every finished run, the stand-alone trainings and Kendall's tau; rewritten after each."""

    def __init__(self, out_dir: Path, header: dict[str, Any]):
        self.path = out_dir / RESULTS_FILE
        try:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
        except json.JSONDecodeError:
            raise SystemExit(f"{self.path} is not valid JSON; move it away to start the benchmark over.") from None
        self.data: dict[str, Any] = {"runs": [], "standalone": {}, "kendall": {}, "failures": [], **data}
        self.data.update(header)

    @property
    def runs(self) -> list[dict[str, Any]]:
        return self.data["runs"]

    def get(self, pair: str, method: str, seed: int) -> dict[str, Any] | None:
        return next((run for run in self.runs if _key(run) == (pair, method, seed)), None)

    def put(self, run: dict[str, Any]) -> None:
        self.data["runs"] = [other for other in self.runs if _key(other) != _key(run)] + [run]
        self.data["failures"] = [failure for failure in self.data["failures"] if _key(failure) != _key(run)]
        self.save()

    def fail(self, pair: str, method: str, seed: int, error: str) -> None:
        self.data["failures"].append({"pair": pair, "method": method, "seed": seed, "error": error})
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str) + "\n")


def _key(record: dict[str, Any]) -> tuple[str, str, int]:
    return record["pair"], record["method"], record["seed"]


@dataclass
class Outcome:
    """What a run returns besides its cost: the returned network's numbers and a few facts about the run."""

    test_accuracy: float
    val_accuracy: float
    params: int
    flops: int
    architecture: str
    facts: dict[str, Any] = field(default_factory=dict)
    extra_train_flops: int = 0  # training done before this run and reused by it (a supernet), booked here


def outcome_of(result: dict[str, Any], **facts: Any) -> Outcome:
    """An Outcome from a trial's or search's final result (test_accuracy, val_accuracy, params, flops, export_dir)."""
    return Outcome(test_accuracy=float(result["test_accuracy"]), val_accuracy=float(result.get("val_accuracy", math.nan)),
                   params=int(result["params"]), flops=int(result["flops"]),
                   architecture=(result["architecture"] if isinstance(result.get("architecture"), str)
                                 else describe_export(result.get("export_dir"))), facts=facts)


def run_once(results: Results, work_dir: Path, pair: str, method: str, seed: int,
             body: Callable[[Path], Outcome]) -> dict[str, Any] | None:
    """The run's record: from results.json if it finished before, else body(work_dir) measured and recorded.

    The work folder starts empty: a search resumed from its state file would book only the rest of its
    training, so an interrupted run starts over. A failing run is logged and recorded; the benchmark goes on.
    """
    done = results.get(pair, method, seed)
    if done is not None:
        return done
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    logger.info("[%s seed %d] %s ...", pair, seed, method)
    started = time.perf_counter()
    try:
        with measuring() as ledger:
            outcome = body(work_dir)
    except Exception as error:  # noqa: BLE001 - one broken run must not lose the others
        logger.error("[%s seed %d] %s failed: %s", pair, seed, method, error)
        results.fail(pair, method, seed, "".join(traceback.format_exception_only(error)).strip()[-2000:])
        logger.debug("%s", traceback.format_exc())
        return None
    record = {
        "pair": pair, "method": method, "seed": seed,
        "test_accuracy": outcome.test_accuracy, "val_accuracy": outcome.val_accuracy,
        "params": outcome.params, "flops": outcome.flops,
        "train_flops": ledger.total + outcome.extra_train_flops, "ledger": ledger.to_dict(),
        "wall_s": round(time.perf_counter() - started, 1), "architecture": outcome.architecture, **outcome.facts,
    }
    results.put(record)
    logger.info("[%s seed %d] %s: test %.4f, val %.4f, %.3g training FLOPs, %.0f s", pair, seed, method,
                record["test_accuracy"], record["val_accuracy"], record["train_flops"], record["wall_s"])
    return record


# ---- budgets ---------------------------------------------------------------------------------------------------
def images_per_epoch(settings: dict[str, Any]) -> int:
    """Training images one epoch of these data settings sees (the split is the seed's; limits included)."""
    from strategies.data import DataSettings, make_job_datamodule
    from strategies.settings import parse_settings

    keys = {name for name in DataSettings.__dataclass_fields__}
    data = parse_settings(DataSettings, {k: v for k, v in settings.items() if k in keys}, "benchmark data")
    count = len(make_job_datamodule(data).train_set)
    if data.limit_train_batches is not None:
        count = min(count, data.limit_train_batches * data.batch_size)
    return count


def epochs_for_budget(budget: int, forward_flops: int, images: int) -> int:
    """Whole epochs of a network of that forward cost that spend `budget` training FLOPs (at least one)."""
    return max(1, round(budget / max(1, training_flops(forward_flops, images))))


@dataclass
class Trial:
    sample: dict[str, Any]
    val_accuracy: float
    train_flops: int
    result: dict[str, Any]  # the trial's own result (its test accuracy is read only for the chosen one)


MISSES_BEFORE_STOP = 20  # samples in a row over what is left of the budget before a budget-limited search ends


def budget_limited_search(propose: Callable[[int], dict[str, Any] | None], train: Callable[[dict[str, Any], int], dict],
                          predicted_flops: Callable[[dict[str, Any]], int], budget: int, max_trials: int,
                          learn: Callable[[int, dict[str, Any], float], None] | None = None) -> tuple[Trial, list[Trial]]:
    """Sample, train, repeat while networks still fit in what is left of `budget`; returns the trial with the best
    validation accuracy and all trials. The first trial always runs (else nothing is returned).

    A sample whose predicted training FLOPs would pass the budget is skipped, not trained, and another drawn: the
    search ends after MISSES_BEFORE_STOP such draws in a row (stopping at the first one left up to 2/3 of the
    budget unused when a large sample came early, which handicapped random search against the method).
    """
    trials: list[Trial] = []
    spent = misses = 0
    proposals = itertools.count()  # the proposer's index: train, learn and TPE's bookkeeping share it
    while len(trials) < max_trials and misses < MISSES_BEFORE_STOP:
        index = next(proposals)
        sample = propose(index)
        if sample is None:
            break
        if trials and spent + predicted_flops(sample) > budget:
            misses += 1
            continue
        misses = 0
        with measuring() as ledger:
            result = train(sample, index)
        trials.append(Trial(sample, float(result["val_accuracy"]), ledger.total, result))
        spent += ledger.total
        if learn is not None:
            learn(index, sample, trials[-1].val_accuracy)
    if not trials:
        raise RuntimeError("the search proposed no network; widen the space or raise the budget.")
    return max(trials, key=lambda trial: trial.val_accuracy), trials


def search_facts(best: Trial, trials: list[Trial], budget: int) -> dict[str, Any]:
    return {"budget": budget, "trials": len(trials), "chosen_sample": best.sample,
            "trial_val_accuracies": [round(trial.val_accuracy, 4) for trial in trials]}


# ---- describing a network --------------------------------------------------------------------------------------
def describe_spec(spec) -> str:
    """depths per stage, widths, and kernels/activations that are not the default 3x3 ReLU."""
    blocks = [block for _, _, block in spec.iter_blocks()]
    widths = [spec.stem.out_channels] + [block.out_channels for block in blocks]
    text = f"depths {'-'.join(map(str, spec.depths))}, widths {min(widths)}-{max(widths)}"
    kernels = sum(block.kernel_size != 3 for block in blocks)
    activations = sorted({block.activation for block in blocks} - {"relu"})
    if kernels:
        text += f", {kernels} non-3x3 kernels"
    if activations:
        text += f", {'/'.join(activations)} in {sum(block.activation != 'relu' for block in blocks)} blocks"
    return text


def describe_export(export_dir: str | None) -> str:
    if not export_dir or not (Path(export_dir) / "arch_spec.json").exists():
        return ""
    from search_spaces.spec import ArchSpec

    return describe_spec(ArchSpec.from_json((Path(export_dir) / "arch_spec.json").read_text()))


def ledger_part(record: dict[str, Any], *kinds: str) -> int:
    """Training FLOPs a recorded run booked under these kinds (its ledger)."""
    return sum(record.get("ledger", {}).get(kind, {}).get("flops", 0) for kind in kinds)


# ---- one network, trained and tested --------------------------------------------------------------------------
def train_and_test(spec, settings, optim, epochs: int) -> dict[str, Any]:
    """`spec` built from scratch (seeded), trained `epochs` with `optim` on the settings' data (fit books it in the
    ledger), then its validation and test accuracy; `settings` is a method's parsed settings (DataSettings)."""
    import torch

    from search_spaces.builder import build_model
    from strategies.data import make_job_datamodule
    from strategies.multi_trial.job_trial import cost_facts
    from trainers import evaluate, fit, training_device

    datamodule = make_job_datamodule(settings)
    torch.manual_seed(settings.seed)
    model = build_model(spec)
    fitted = fit(model, datamodule, optim, epochs, seed=settings.seed, limit_train_batches=settings.limit_train_batches,
                 limit_val_batches=settings.limit_val_batches, precision=settings.precision,
                 channels_last=settings.channels_last)
    model.to(training_device())
    tested = evaluate(model, datamodule, split="test")["accuracy"]
    return {"val_accuracy": fitted.final_val_accuracy, "test_accuracy": tested, "epochs": epochs,
            "architecture": describe_spec(spec), **cost_facts(spec, settings)}


@dataclass
class Context:
    """What every pair needs: the preset, the results file, where work folders go, the optional budget cap."""

    preset: Any  # presets.Preset
    results: Results
    work_root: Path
    budget_cap: int | None = None

    def work_dir(self, pair: str, method: str, seed: int) -> Path:
        return self.work_root / pair / f"seed{seed}" / method

    def run(self, pair: str, method: str, seed: int, body: Callable[[Path], Outcome]) -> dict[str, Any] | None:
        return run_once(self.results, self.work_dir(pair, method, seed), pair, method, seed, body)

    def budget(self, method_record: dict[str, Any]) -> int:
        """The baselines' training FLOPs: --budget when given, else what the paired method spent."""
        return self.budget_cap or int(method_record["train_flops"])


class QuietReporter:
    """A trial reporter that keeps nothing: the benchmark reads the trial's return value."""

    def intermediate(self, metrics: dict[str, Any]) -> None:
        pass

    def final(self, metrics: dict[str, Any]) -> None:
        pass
