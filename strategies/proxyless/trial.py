"""One ProxylessNAS search-scope trial: search, take the argmax path, retrain it from scratch, test, export.
Scope "none" is Table I's baseline: no search, the plain ResNet-50 retrained, tested and exported the same way.
With `start` (a pretrained ResNet-50, proxyless.start) the supernet starts from its weights, and with
retrain_from start the retrain fine-tunes the found path from them (scope none: the plain fine-tuned baseline).

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
from search_spaces.model_card import ModelCard, NetworkOrigin
from search_spaces.scopes import BASELINE_SCOPE
from search_spaces.spaces import ScopedResNet50
from search_spaces.spaces.base_weights import load_base_weights
from search_spaces.spec import ArchSpec
from search_spaces.timm_import import ImportedNetwork
from trainers import CheckpointError, OptimConfig, dataset_info, fit, training_device
from trainers.atomic import atomic_write_text
from trainers.datasets import DatasetInfo

from ..data import input_size as data_input_size
from ..data import make_job_datamodule
from ..multi_trial.job_trial import cost_facts, test_and_export, trial_tensorboard_dir
from ..reporting import Reporter
from ..settings import parse_settings
from . import distributed
from .gate_latency import pick_within_target
from .search import ProxylessSearch
from .settings import ProxylessSearchConfig, ProxylessSettings
from .start import base_spec, load_start
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
    start = load_start(settings, info)  # before any training: a start that is not the base network is refused here

    if settings.scope == BASELINE_SCOPE:
        spec, sample, search_facts = base_spec(settings, info), {}, {"search_epochs_run": 0, "stop_epoch": None}
        search_seconds, notes = 0.0, ()
    else:
        space = _scoped_space(settings, info)
        if start is not None:  # every candidate from the pretrained block (a resumed search loads its own next)
            load_base_weights(space, start.state_dict)
        search_started = time.perf_counter()
        search, search_facts = _search(space, settings, datamodule, input_size, output_dir, reporter)
        if not search.world.is_main:  # a torchrun rank past 0: rank 0 retrains, tests, exports and reports
            return {}
        top = write_top_architectures(output_dir, space, search, settings)
        notes = (f"Rank 1 (the argmax) of the search's top {len(top)} architectures under the final gates "
                 f"(probability {top[0].probability:.4g}); the others are in the trial's {TOP_ARCHITECTURES_FILE}.",)
        sample, pick_facts, pick_note = _pick(search, settings)
        search_facts.update(pick_facts)
        notes = pick_note or notes
        spec = space.to_spec(sample)
        search_seconds = time.perf_counter() - search_started

    atomic_write_text(output_dir / "arch.json", spec.to_json())
    logger.info("architecture found: %s", json.dumps(sample))

    # Retrain the found path from scratch with the weight settings (the paper's final step), or fine-tune it from
    # the start's weights (retrain_from start).
    retrain_started = time.perf_counter()
    model, fitted = retrain(spec, settings, datamodule, output_dir / "retrain.ckpt", start)
    retrain_seconds = time.perf_counter() - retrain_started
    origin = start.origin if start is not None else None
    card = proxyless_card(settings, notes=notes, start_origin=origin)
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
        "retrain_from": settings.retrain_from,
        **search_facts,
        **({"start_origin": origin.to_dict()} if origin is not None else {}),
    }
    reporter.final(final)
    return final


def _pick(search: ProxylessSearch, settings: ProxylessSettings) -> tuple[dict, dict[str, Any], tuple[str, ...]]:
    """(the sample to retrain, facts to report, the card's note when it is not the argmax): the argmax, or with a
    latency target and latency_pick within_target the argmax brought within the target (gate_latency.py)."""
    argmax = search.argmax_sample()
    if settings.latency_target_ms is None or settings.latency_pick != "within_target":
        return argmax, {}, ()
    sample, ms, within = pick_within_target(search.bank, search.candidate_latency, settings.latency_target_ms)
    facts = {"latency_pick": "argmax" if sample == argmax else "within_target", "picked_latency_ms": round(ms, 4),
             "picked_within_target": within}
    if sample == argmax:
        return argmax, facts, ()
    changed = sorted(label for label in sample if sample[label] != argmax[label])
    if not within:
        logger.warning("even the fastest candidates are predicted at %.4g ms, over latency_target_ms %g", ms,
                       settings.latency_target_ms)
    note = (f"The argmax of the final gates brought within latency_target_ms {settings.latency_target_ms:g} "
            f"(predicted {ms:.4g} ms) by switching {', '.join(changed)} to faster candidates, those giving up the "
            f"least gate probability per ms saved.",)
    return sample, facts, note


def retrain(spec: ArchSpec, settings: ProxylessSettings, datamodule, checkpoint_path: Path,
            start: ImportedNetwork | None = None):
    """(model, FitResult): `spec` trained with the weight settings, saved to checkpoint_path: from scratch, or
    with retrain_from start from the start network's weights (`start`, else imported here: `resnas export
    --retrain` of another rank), larger kernels zero-padded."""
    model = build_model(spec)
    if settings.retrain_from == "start":
        start = start or load_start(settings, dataset_info(settings.dataset, settings.data_dir))
        load_base_weights(model, start.state_dict)
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


def proxyless_card(settings: ProxylessSettings, notes: tuple[str, ...] = (),
                   start_origin: NetworkOrigin | None = None) -> ModelCard:
    """The method's part of an export's model card; job_trial.data_card adds the data, seed and settings."""
    trained = "fine-tuned from the start network" if settings.retrain_from == "start" else "trained from scratch"
    if settings.scope == BASELINE_SCOPE:
        description = f"the plain ResNet-50 of ProxylessNAS's Table I (no search), {trained}"
    else:
        initialised = ", the supernet initialised from the start network" if start_origin is not None else ""
        retrained = "fine-tuned from the start network" if settings.retrain_from == "start" else "retrained from scratch"
        description = (f"ProxylessNAS with binary gates over ResNet-50 search scope {settings.scope} (Search Space "
                       f"Adaptation for Differentiable NAS): middle-conv kernel x activation of every bottleneck in "
                       f"the scope{initialised}, then the chosen path {retrained}")
    return ModelCard(method="proxyless", method_description=description, notes=notes, start_origin=start_origin)


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
