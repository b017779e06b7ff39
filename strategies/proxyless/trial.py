"""One ProxylessNAS search-scope trial: search, take the argmax path, retrain it from scratch, test, export.
Scope "none" is Table I's baseline: no search, the plain ResNet-50 retrained, tested and exported the same way.

Artifacts in the trial's output folder: supernet.ckpt (resumable), gates.json + gates.png (Fig. 3),
arch.json (the ArchSpec found), top_architectures.json (the top_k most probable paths under the final gates,
argmax first, with their probabilities, ArchSpecs and what `resnas export --top` needs to export or retrain
any of them; searched scopes only), retrain.ckpt and timm_export/.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from search_spaces.builder import build_model
from search_spaces.model_card import ModelCard
from search_spaces.scopes import BASELINE_SCOPE
from search_spaces.spaces import ScopedResNet50
from search_spaces.spec import ArchSpec, resnet_spec
from trainers import CheckpointError, OptimConfig, dataset_info, fit, training_device
from trainers.atomic import atomic_write_text
from trainers.datasets import DatasetInfo

from ..data import input_size as data_input_size
from ..data import make_job_datamodule
from ..multi_trial.job_trial import cost_facts, test_and_export, trial_tensorboard_dir
from ..reporting import Reporter
from ..settings import parse_settings
from . import distributed
from .search import ProxylessSearch
from .settings import ProxylessSearchConfig, ProxylessSettings
from .top_k import TOP_ARCHITECTURES_FILE, TOP_ARCHITECTURES_FORMAT, RankedArchitecture, top_k_architectures
from .trajectory import GateTrajectory, SearchExit

logger = logging.getLogger(__name__)
SUPERNET_FILE = "supernet.ckpt"


def run_proxyless_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    settings = parse_settings(ProxylessSettings, parameters.get("settings"), "trial parameters")
    torch.manual_seed(settings.seed)
    info = dataset_info(settings.dataset, settings.data_dir)
    datamodule = make_job_datamodule(settings)
    input_size = data_input_size(settings)

    if settings.scope == BASELINE_SCOPE:
        spec, sample, search_facts = _baseline_spec(settings, info), {}, {"search_epochs_run": 0, "stop_epoch": None}
        search_seconds, notes = 0.0, ()
    else:
        space = _scoped_space(settings, info)
        search_started = time.perf_counter()
        search, search_facts = _search(space, settings, datamodule, input_size, output_dir, reporter)
        if not search.world.is_main:  # a torchrun rank past 0: rank 0 retrains, tests, exports and reports
            return {}
        sample = search.argmax_sample()
        spec = space.to_spec(sample)
        top = write_top_architectures(output_dir, space, search, settings)
        notes = (f"Rank 1 (the argmax) of the search's top {len(top)} architectures under the final gates "
                 f"(probability {top[0].probability:.4g}); the others are in the trial's {TOP_ARCHITECTURES_FILE}.",)
        search_seconds = time.perf_counter() - search_started

    atomic_write_text(output_dir / "arch.json", spec.to_json())
    logger.info("architecture found: %s", json.dumps(sample))

    # Retrain the found path from scratch with the weight settings (the paper's final step).
    retrain_started = time.perf_counter()
    model, fitted = retrain(spec, settings, datamodule, output_dir / "retrain.ckpt")
    retrain_seconds = time.perf_counter() - retrain_started
    card = proxyless_card(settings, notes=notes)
    # test_accuracy, test_split, export_dir
    tested = test_and_export(model, spec, datamodule, settings, output_dir, card)
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


def retrain(spec: ArchSpec, settings: ProxylessSettings, datamodule, checkpoint_path: Path):
    """(model, FitResult): `spec` trained from scratch with the weight settings, saved to checkpoint_path."""
    model = build_model(spec)
    fitted = fit(
        model,
        datamodule,
        retrain_optim(settings),
        settings.retrain_epochs,
        seed=settings.seed,
        limit_train_batches=settings.limit_train_batches,
        limit_val_batches=settings.limit_val_batches,
        checkpoint_path=checkpoint_path,
        precision=settings.precision,
        channels_last=settings.channels_last,
        tensorboard_dir=trial_tensorboard_dir("retrain"),
    )
    return model, fitted


def retrain_optim(settings: ProxylessSettings) -> OptimConfig:
    """The paper's weight optimiser for the retrain: SGD with Nesterov momentum, cosine over retrain_epochs."""
    return OptimConfig(optimizer="sgd", lr=settings.lr, momentum=settings.momentum, nesterov=True,
                       weight_decay=settings.weight_decay, schedule=settings.retrain_schedule)


def proxyless_card(settings: ProxylessSettings, notes: tuple[str, ...] = ()) -> ModelCard:
    """The method's part of an export's model card; job_trial.data_card adds the data, seed and settings."""
    if settings.scope == BASELINE_SCOPE:
        description = "the plain ResNet-50 of ProxylessNAS's Table I (no search), trained from scratch"
    else:
        description = (f"ProxylessNAS with binary gates over ResNet-50 search scope {settings.scope} (Search Space "
                       f"Adaptation for Differentiable NAS): middle-conv kernel x activation of every bottleneck in "
                       f"the scope, then the chosen path retrained from scratch")
    return ModelCard(method="proxyless", method_description=description, notes=notes)


def write_top_architectures(output_dir: Path, space, search: ProxylessSearch,
                            settings: ProxylessSettings) -> list[RankedArchitecture]:
    """top_architectures.json: the top_k paths with their ArchSpecs, and what exporting one needs without NNI
    (the supernet file, which gate module holds which label, the candidates' order, the trial's settings)."""
    from .binary_gates import BinaryGateChoice

    probabilities = search.bank.ranking_probabilities()
    ranked = top_k_architectures(probabilities, settings.top_k)
    if ranked[0].sample != search.argmax_sample():  # equal alphas tie; both orders then take the first candidate
        logger.warning("the most probable path differs from the argmax; the trial retrains the argmax")
    record = {
        "format": TOP_ARCHITECTURES_FORMAT,
        "version": 1,
        "scope": settings.scope,
        "k": settings.top_k,
        "search_epochs_run": search.epoch,
        "probabilities": probabilities,
        "supernet": SUPERNET_FILE,
        "gate_labels": {name: gate.label for name, gate in space.named_modules() if isinstance(gate, BinaryGateChoice)},
        "settings": settings.to_dict(),
        "architectures": [{**entry.to_dict(), "arch_spec": json.loads(space.to_spec(entry.sample).to_json())}
                          for entry in ranked],
    }
    atomic_write_text(output_dir / TOP_ARCHITECTURES_FILE, json.dumps(record, indent=2) + "\n")
    return ranked


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


def _scoped_space(settings: ProxylessSettings, info: DatasetInfo) -> ScopedResNet50:
    return ScopedResNet50(
        settings.scope,
        num_classes=info.num_classes,
        stem=settings.stem,
        width_multiplier=settings.width_multiplier,
        in_channels=info.in_channels,
    )


def _search(space, settings: ProxylessSettings, datamodule, input_size, output_dir: Path, reporter: Reporter):
    """The one-shot search, resumable from supernet.ckpt; returns the search (its gates) and facts to report.

    Data-parallel when torchrun started this process in a world, or when settings.world_size (default: the
    visible GPUs) is above 1: then this process is rank 0 and spawns the others (proxyless.distributed).
    """
    world, ranks = distributed.torchrun_world(), None
    if world is None:
        world = distributed.World(rank=0, size=distributed.requested_world_size(settings.world_size))
        if world.distributed:
            port = distributed.free_port()
            ranks = distributed.start_ranks(_search_rank, world.size, args=(settings.to_dict(), str(output_dir), port))
            distributed.init_process_group(world, port=port)
    elif not distributed.dist.is_initialized():
        distributed.init_process_group(world)
    try:
        return _search_loop(space, settings, datamodule, input_size, output_dir, reporter, world)
    except BaseException:
        if ranks is not None:  # they would wait for rank 0 in their next all-reduce
            distributed.stop_ranks(ranks)
            ranks = None
        raise
    finally:
        if world.distributed:
            distributed.leave()
        if ranks is not None:
            distributed.join_ranks(ranks)


def _search_rank(rank: int, world_size: int, settings_dict: dict, output_dir: str, port: int) -> None:
    """A spawned rank past 0: the same search on its shard of the data, writing and reporting nothing."""
    settings = parse_settings(ProxylessSettings, settings_dict, "trial parameters")
    torch.manual_seed(settings.seed)
    info = dataset_info(settings.dataset, settings.data_dir)
    world = distributed.World(rank=rank, size=world_size)
    distributed.init_process_group(world, port=port)
    try:
        _search_loop(_scoped_space(settings, info), settings, make_job_datamodule(settings), data_input_size(settings),
                     Path(output_dir), None, world)
    finally:
        distributed.leave()


def _search_loop(space, settings: ProxylessSettings, datamodule, input_size, output_dir: Path,
                 reporter: Reporter | None, world: distributed.World):
    """Every rank runs this; only rank 0 reports and writes (checkpoint, gates), and every rank resumes from
    the same checkpoint, so the ranks' supernets, gate trajectories and exit decisions stay identical."""
    device = distributed.rank_device(world) if world.distributed else training_device()
    search = ProxylessSearch(space, ProxylessSearchConfig.from_settings(settings, input_size), device, world=world)
    trajectory = GateTrajectory(candidates={label: list(values) for label, values in space.choice_labels()})
    exit_rule = SearchExit(patience=settings.exit_patience, entropy_threshold=settings.exit_entropy)
    checkpoint_path = output_dir / SUPERNET_FILE
    start_epoch = _resume(search, trajectory, exit_rule, checkpoint_path, output_dir / "gates.json")

    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    if world.distributed:  # each rank its own shard of both splits
        train_loader = distributed.shard_loader(train_loader, world, shuffle=True, seed=settings.seed)
        val_loader = distributed.shard_loader(val_loader, world, shuffle=False)
    stop_epoch = None
    epochs_run = start_epoch
    for epoch in range(start_epoch, settings.search_epochs):
        distributed.set_shard_epoch(train_loader, epoch)
        metrics = search.run_epoch(
            train_loader,
            val_loader,
            limit_train_batches=settings.limit_train_batches,
            limit_val_batches=settings.limit_val_batches,
        )
        gate_stats = trajectory.record(search.gate_probabilities(), metrics.get("expected_latency_ms"))
        epochs_run = epoch + 1
        stop = exit_rule.should_stop(gate_stats["argmax_changes"], gate_stats["gate_entropy"])
        if world.is_main:
            reporter.intermediate({"default": metrics["val_accuracy"], "epoch": epochs_run, **metrics, **gate_stats})
            search.save(checkpoint_path, extra={"epoch": epochs_run, "stable_epochs": exit_rule.stable_epochs})
            trajectory.save(output_dir / "gates.json")
        if stop:
            stop_epoch = epochs_run
            logger.info("search exit criterion met at epoch %d", stop_epoch)
            break
    if world.is_main:
        trajectory.plot(output_dir / "gates.png")
    facts = {"search_epochs_run": epochs_run, "stop_epoch": stop_epoch}
    return search, facts


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
        saved = GateTrajectory.load(gates)
        trajectory.epochs = saved.epochs[: extra["epoch"]]
        trajectory.expected_latency_ms = saved.expected_latency_ms[: extra["epoch"]]
    exit_rule.stable_epochs = extra.get("stable_epochs", 0)
    logger.info("resuming the search after epoch %d", extra["epoch"])
    return int(extra["epoch"])
