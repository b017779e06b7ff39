"""One NASH job: pretrain the start net, train one child, retrain the parent, or give the best net its final
training.

Parameters (from HillClimbingTuner): kind (start | child | parent | final), settings, epochs, out_dir; for
children and the retrained parent `parent` (a checkpoint) + `morphisms` (none for the parent); for the final
job `parent` (the best), `start` (the start net), `start_origin` (a pretrained start net's origin, for the
model card) and `ensemble` (checkpoints of the snapshot ensemble, may be empty) with their job keys
`ensemble_jobs`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from search_spaces.edits.morphism_ops import Morphism
from search_spaces.edits.morphisms import apply_morphisms
from search_spaces.model_card import ModelCard
from search_spaces.spec import ArchSpec, nash_start_spec
from trainers import DatasetInfo, OptimConfig, evaluate, training_device

from ..multi_trial.job_trial import (
    StartNet,
    build_with_weights,
    cost_facts,
    load_job_model,
    load_start_net,
    run_job,
    save_job_model,
    start_origin,
    test_and_export,
    train,
)
from ..reporting import Reporter
from ..settings import SettingsError
from .final import TrainAndValData, ensemble_test_accuracy, load_members
from .settings import HillClimbingSettings


def start_net(settings: HillClimbingSettings) -> StartNet:
    """The paper's start net ("nash": conv-maxpool-conv-maxpool-conv-fc at start_widths), an ArchSpec file, or a
    pretrained timm ResNet with its weights."""

    def nash(info: DatasetInfo) -> ArchSpec:
        return nash_start_spec(info.num_classes, tuple(settings.start_widths), info.in_channels)

    return load_start_net(settings.start, {"nash": nash}, settings)


def start_spec(settings: HillClimbingSettings) -> ArchSpec:
    """The start net's spec alone (no weights are kept)."""
    return start_net(settings).spec


NEIGHBOUR_KINDS = ("child", "parent")  # the jobs of a hill-climbing step, the ones neighbour_schedule governs


def job_optim(settings: HillClimbingSettings, kind: str) -> OptimConfig:
    """NASH's SGDR run: cosine annealing from lr_start to lr_end over the run's epochs, restarted per run.
    With neighbour_schedule constant (the paper's ablation) a step's neighbours train at lr_start throughout;
    the start net's pretraining and the final training stay cosine."""
    constant = settings.neighbour_schedule == "constant" and kind in NEIGHBOUR_KINDS
    return OptimConfig(optimizer="sgd", lr=settings.lr_start, lr_min=settings.lr_end, momentum=settings.momentum,
                       nesterov=True, weight_decay=settings.weight_decay, schedule="none" if constant else "cosine")


def run_hill_climbing_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    return run_job(parameters, output_dir, reporter, HillClimbingSettings,
                   lambda settings, datamodule, out_dir: _job(parameters, settings, datamodule, out_dir, reporter))


def _job(parameters: dict[str, Any], settings: HillClimbingSettings, datamodule, out_dir: Path,
         reporter: Reporter) -> dict[str, Any]:
    kind, epochs = parameters.get("kind"), int(parameters["epochs"])
    optim = job_optim(settings, kind)

    if kind == "start":  # a pretrained start with pretrain_epochs 0 is only evaluated, below
        start = start_net(settings)
        spec, model, facts = start.spec, start.build(), start.facts()
    elif kind in (*NEIGHBOUR_KINDS, "final"):
        spec, state_dict = load_job_model(parameters["parent"])
        morphisms = [Morphism.from_dict(item) for item in parameters.get("morphisms", [])]
        spec, state_dict = apply_morphisms(spec, state_dict, morphisms)
        model = build_with_weights(spec, state_dict)
        facts = {"parent": parameters.get("parent_job"), "morphisms": [m.op for m in morphisms]}
    else:
        raise SettingsError(f"unknown hill-climbing job kind {kind!r}; use start, child, parent or final.")

    on_train_and_val = kind == "final" and settings.final_on_train_and_val and epochs > 0
    train_data = TrainAndValData(datamodule) if on_train_and_val else datamodule
    if kind in NEIGHBOUR_KINDS and epochs > 0:
        # The morphisms keep the parent's function (eval mode): a child's accuracy before training is its parent's,
        # the check that the network grew from its parent's weights and not from scratch.
        # Under a forked RNG: a data loader draws a seed from torch's generator, and the measurement must not
        # change the training that follows (same child, same seed, same result as without it).
        with torch.random.fork_rng():
            before = evaluate(model.to(training_device()), datamodule, split="val")["accuracy"]
        facts["val_accuracy_before_training"] = before
    fitted = train(model, train_data, settings, optim, epochs, reporter) if epochs > 0 else None
    val_accuracy = fitted.final_val_accuracy if fitted else evaluate(model, datamodule, split="val")["accuracy"]
    save_job_model(out_dir, model, spec, extra={"job": parameters.get("job"), "epochs": epochs})
    # Trained on the validation images too, the final net's val accuracy is no held-out number: named apart.
    val_name = "train_val_accuracy" if on_train_and_val else "val_accuracy"
    result = {
        "default": val_accuracy,
        val_name: val_accuracy,
        "job": parameters.get("job"),
        "train_seconds": round(fitted.seconds, 1) if fitted else 0.0,
        **cost_facts(spec, settings),
        **facts,
    }
    if kind == "final":
        card = replace(CARD, start_origin=start_origin(parameters))
        result.update(_final_facts(model, spec, datamodule, settings, out_dir, parameters["start"], card))
        result.update(_ensemble_facts(parameters.get("ensemble") or [], parameters.get("ensemble_jobs") or [],
                                      datamodule, settings))
    return result


CARD = ModelCard(method="hill_climbing", method_description="NASH hill climbing (Elsken et al., Simple and Efficient "
                 "Architecture Search for CNNs): network morphisms grown from a small net, each step trained with SGDR")


def _final_facts(model, spec: ArchSpec, datamodule, settings: HillClimbingSettings, out_dir: Path,
                 start_checkpoint: str, card: ModelCard) -> dict[str, Any]:
    """`default` becomes the test accuracy; `start_default` is the start net's, measured the same way."""
    tested = test_and_export(model, spec, datamodule, settings, out_dir, card=card)
    start_spec_, start_weights = load_job_model(start_checkpoint)
    start_model = build_with_weights(start_spec_, start_weights)
    start_test = evaluate(start_model, datamodule, split="test")["accuracy"]
    start_val = evaluate(start_model, datamodule, split="val")["accuracy"]
    return {
        "default": tested["test_accuracy"],
        "start_default": start_test,
        "start_val_accuracy": start_val,
        "start_params": cost_facts(start_spec_, settings)["params"],
        **tested,
    }


def _ensemble_facts(checkpoints: list[str], jobs: list[str], datamodule, settings: HillClimbingSettings
                    ) -> dict[str, Any]:
    """The snapshot ensemble of the winners of the last ensemble_last steps, tested beside the final net."""
    if not checkpoints:
        return {}
    members = load_members(checkpoints)
    return {
        "ensemble_test_accuracy": ensemble_test_accuracy([model for _, model in members], datamodule),
        "ensemble_jobs": jobs,
        "ensemble_params": sum(cost_facts(spec, settings)["params"] for spec, _ in members),
    }
