"""One ProxylessNAS search-scope trial: search, take the argmax path, retrain it from scratch, test, export.
Scope "none" is Table I's baseline: no search, the plain ResNet-50 retrained, tested and exported the same way.

Artifacts in the trial's output folder: supernet.ckpt (resumable), gates.json + gates.png (Fig. 3),
arch.json (the ArchSpec found), retrain.ckpt and timm_export/.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from search_spaces.builder import build_model
from search_spaces.scopes import BASELINE_SCOPE
from search_spaces.spaces import ScopedResNet50
from search_spaces.spec import ArchSpec, resnet_spec
from trainers import CheckpointError, OptimConfig, dataset_info, fit, training_device
from trainers.atomic import atomic_write_text
from trainers.datasets import DatasetInfo

from ..data import input_size as data_input_size
from ..data import make_job_datamodule
from ..multi_trial.job_trial import cost_facts, test_and_export
from ..reporting import Reporter
from ..settings import parse_settings
from .search import ProxylessSearch
from .settings import ProxylessSearchConfig, ProxylessSettings
from .trajectory import GateTrajectory, SearchExit

logger = logging.getLogger(__name__)


def run_proxyless_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    settings = parse_settings(ProxylessSettings, parameters.get("settings"), "trial parameters")
    torch.manual_seed(settings.seed)
    info = dataset_info(settings.dataset, settings.data_dir)
    datamodule = make_job_datamodule(settings)
    input_size = data_input_size(settings)

    if settings.scope == BASELINE_SCOPE:
        spec, sample, search_facts = _baseline_spec(settings, info), {}, {"search_epochs_run": 0, "stop_epoch": None}
        search_seconds = 0.0
    else:
        space = ScopedResNet50(
            settings.scope,
            num_classes=info.num_classes,
            stem=settings.stem,
            width_multiplier=settings.width_multiplier,
            in_channels=info.in_channels,
        )
        search_started = time.perf_counter()
        sample, search_facts = _search(space, settings, datamodule, input_size, output_dir, reporter)
        spec = space.to_spec(sample)
        search_seconds = time.perf_counter() - search_started

    atomic_write_text(output_dir / "arch.json", spec.to_json())
    logger.info("architecture found: %s", json.dumps(sample))

    # Retrain the found path from scratch with the weight settings (the paper's final step).
    retrain_started = time.perf_counter()
    model = build_model(spec)
    optim = OptimConfig(
        optimizer="sgd",
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=True,
        weight_decay=settings.weight_decay,
        schedule=settings.retrain_schedule,
    )
    fitted = fit(
        model,
        datamodule,
        optim,
        settings.retrain_epochs,
        seed=settings.seed,
        limit_train_batches=settings.limit_train_batches,
        limit_val_batches=settings.limit_val_batches,
        checkpoint_path=output_dir / "retrain.ckpt",
        precision=settings.precision,
        channels_last=settings.channels_last,
    )
    retrain_seconds = time.perf_counter() - retrain_started
    tested = test_and_export(model, spec, datamodule, settings, output_dir)  # test_accuracy, test_split, export_dir
    final = {
        "default": tested["test_accuracy"],
        **tested,
        "val_accuracy": fitted.final_val_accuracy,
        **cost_facts(spec, settings),
        "search_seconds": round(search_seconds, 1),
        "retrain_seconds": round(retrain_seconds, 1),
        "scope": settings.scope,
        "architecture": sample,
        **search_facts,
    }
    reporter.final(final)
    return final


def _baseline_spec(settings: ProxylessSettings, info: DatasetInfo) -> ArchSpec:
    """Table I's plain ResNet-50 (k3/ReLU everywhere): the base network every scope searches around, with
    the same stem, width and classes, trained and tested by the same code as a found architecture."""
    return resnet_spec(
        50,
        num_classes=info.num_classes,
        stem=settings.stem,
        width_multiplier=settings.width_multiplier,
        in_channels=info.in_channels,
    )


def _search(space, settings: ProxylessSettings, datamodule, input_size, output_dir: Path, reporter: Reporter):
    """The one-shot search, resumable from supernet.ckpt; returns the argmax sample and facts to report."""
    search = ProxylessSearch(space, ProxylessSearchConfig.from_settings(settings, input_size), training_device())
    trajectory = GateTrajectory(candidates={label: list(values) for label, values in space.choice_labels()})
    exit_rule = SearchExit(patience=settings.exit_patience, entropy_threshold=settings.exit_entropy)
    checkpoint_path = output_dir / "supernet.ckpt"
    start_epoch = _resume(search, trajectory, exit_rule, checkpoint_path, output_dir / "gates.json")

    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    stop_epoch = None
    epochs_run = start_epoch
    for epoch in range(start_epoch, settings.search_epochs):
        metrics = search.run_epoch(
            train_loader,
            val_loader,
            limit_train_batches=settings.limit_train_batches,
            limit_val_batches=settings.limit_val_batches,
        )
        gate_stats = trajectory.record(search.gate_probabilities())
        epochs_run = epoch + 1
        reporter.intermediate({"default": metrics["val_accuracy"], "epoch": epochs_run, **metrics, **gate_stats})
        stop = exit_rule.should_stop(gate_stats["argmax_changes"], gate_stats["gate_entropy"])
        search.save(checkpoint_path, extra={"epoch": epochs_run, "stable_epochs": exit_rule.stable_epochs})
        trajectory.save(output_dir / "gates.json")
        if stop:
            stop_epoch = epochs_run
            logger.info("search exit criterion met at epoch %d", stop_epoch)
            break
    trajectory.plot(output_dir / "gates.png")
    facts = {"search_epochs_run": epochs_run, "stop_epoch": stop_epoch}
    return search.argmax_sample(), facts


def _resume(search, trajectory: GateTrajectory, exit_rule: SearchExit, checkpoint: Path, gates: Path) -> int:
    """Continue an interrupted search from its last finished epoch; a corrupt checkpoint restarts it."""
    if not checkpoint.exists():
        return 0
    try:
        extra = search.load(checkpoint)
    except CheckpointError as error:
        logger.warning("%s; starting the search over", error)
        return 0
    if gates.exists():
        trajectory.epochs = GateTrajectory.load(gates).epochs[: extra["epoch"]]
    exit_rule.stable_epochs = extra.get("stable_epochs", 0)
    logger.info("resuming the search after epoch %d", extra["epoch"])
    return int(extra["epoch"])
