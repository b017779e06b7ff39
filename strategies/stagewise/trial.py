"""One stage-wise job: a candidate (the donor, the start net, a temporary or a grown net) trained and scored,
or an extension (extra epochs + test; the final one also exports to timm and tests the start net beside it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from search_spaces.builder import build_model
from search_spaces.model_card import ModelCard
from search_spaces.spec import ArchSpec
from trainers import ClassificationDataModule, DatasetInfo, OptimConfig, evaluate, training_device
from trainers.views import with_transform

from ..multi_trial.job_trial import (
    build_with_weights,
    cost_facts,
    load_job_model,
    run_job,
    save_job_model,
    test_and_export,
    train,
)
from ..reporting import Reporter
from ..settings import SettingsError
from .donor import EXPORT_WEIGHTS_FILE, donor_files, donor_spec, timm_donor_spec, transferred_weights
from .features import pooled_stage_features
from .importance import stage_importance
from .settings import StagewiseSettings


CARD = ModelCard(method="stagewise", method_description="Stage-wise depth search (Jordao et al., Stage-Wise NAS): "
                 "stages of a CIFAR ResNet grown while their PLS importance scores rise over the current net's")


def run_stagewise_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    kinds = {"candidate": _candidate, "extended": _extension, "final": _extension}
    body = kinds.get(parameters.get("kind"))
    if body is None:
        raise SettingsError(f"unknown stage-wise job kind {parameters.get('kind')!r}; use {', '.join(kinds)}.")
    return run_job(parameters, output_dir, reporter, StagewiseSettings,
                   lambda settings, datamodule, out_dir: body(parameters, settings, datamodule, out_dir, reporter))


def candidate_optim(settings: StagewiseSettings, epochs: int) -> OptimConfig:
    """The paper's SGD: Nesterov, lr x0.1 at the milestone fractions of this training (100 and 150 of 200)."""
    milestones = tuple(sorted({max(1, round(fraction * epochs)) for fraction in settings.milestones}))
    return OptimConfig(optimizer="sgd", lr=settings.lr, momentum=settings.momentum, nesterov=True,
                       weight_decay=settings.weight_decay, weight_decay_on="kernels", schedule="step",
                       milestones=milestones, gamma=0.1)


def extension_optim(settings: StagewiseSettings) -> OptimConfig:
    """Further training continues at the learning rate the candidate's schedule ended on."""
    final_lr = settings.lr * 0.1 ** len(settings.milestones)
    return OptimConfig(optimizer="sgd", lr=final_lr, momentum=settings.momentum, nesterov=True,
                       weight_decay=settings.weight_decay, weight_decay_on="kernels", schedule="none")


def load_donor(donor: str, settings: StagewiseSettings, info: DatasetInfo) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The donor's spec and weights; a timm donor imported with its head and first conv fitted to the data."""
    if settings.timm_donor:
        imported = import_timm_donor(donor, info)
        return imported.spec, imported.state_dict
    spec = donor_spec(donor, settings.widths)
    _, weights_file = donor_files(donor)
    if weights_file.name == EXPORT_WEIGHTS_FILE:
        return spec, load_file(str(weights_file))
    return spec, load_job_model(weights_file)[1]


def import_timm_donor(donor: str, info: DatasetInfo):
    """A timm donor's ImportedNetwork, refused unless it is the network its name promised (timm_donor_spec), which
    the tuner planned the search's depths and latencies with."""
    from search_spaces.timm_import import import_timm_resnet

    imported = import_timm_resnet(donor, num_classes=info.num_classes, in_channels=info.in_channels)
    expected = timm_donor_spec(donor, info.num_classes, info.in_channels)
    if (imported.spec.stem, imported.spec.stages) != (expected.stem, expected.stages):
        raise SettingsError(f"donor {donor}'s weights are a network of depths {list(imported.spec.depths)} and "
                            f"{imported.spec.num_features} features, not the {imported.origin.architecture} its name "
                            f"says; give a folder or file of a plain timm ResNet of that name.")
    return imported


def _candidate(parameters: dict[str, Any], settings: StagewiseSettings, datamodule: ClassificationDataModule,
               out_dir: Path, reporter: Reporter) -> dict[str, Any]:
    info = datamodule.info
    spec = settings.network(tuple(parameters["depths"]), info.num_classes, info.in_channels)
    model = build_model(spec)
    if parameters.get("donor"):
        donor, weights = load_donor(parameters["donor"], settings, info)
        if donor.head.num_classes != info.num_classes or donor.in_channels != info.in_channels:
            raise SettingsError(f"donor {parameters['donor']} has {donor.head.num_classes} classes and "
                                f"{donor.in_channels} channels, {settings.dataset} {info.num_classes} and "
                                f"{info.in_channels}; give a donor trained on {settings.dataset}.")
        model.load_state_dict(transferred_weights(weights, list(model.state_dict())))
    epochs = int(parameters["epochs"])
    fitted = train(model, datamodule, settings, candidate_optim(settings, epochs), epochs, reporter,
                   report_extra={"iteration": parameters["iteration"]})
    save_job_model(out_dir, model, spec, extra={"job": parameters.get("job")})
    result = {"default": fitted.final_val_accuracy, "val_accuracy": fitted.final_val_accuracy,
              "role": parameters["role"], "iteration": parameters["iteration"], "job": parameters.get("job"),
              "depths": list(spec.depths), "epochs": epochs, "transferred": bool(parameters.get("donor")),
              **cost_facts(spec, settings)}
    if parameters["role"] != "donor":
        result.update(score_stages(model, spec, settings, datamodule))
    return result


def score_stages(model: torch.nn.Module, spec: ArchSpec, settings: StagewiseSettings,
                 datamodule: ClassificationDataModule) -> dict[str, Any]:
    """The stage scores of a trained candidate, from its un-augmented training images (the paper's X_train)."""
    _, plain = datamodule.transforms()
    images = with_transform(datamodule.train_set, plain)
    model.to(training_device())
    features, labels = pooled_stage_features(model, spec, images, settings.batch_size, settings.score_samples,
                                             settings.feature_pool)
    model.cpu()
    scores = stage_importance(features, labels, settings.n_components, settings.criterion)
    return {"stage_scores": scores, "criterion": settings.criterion, "score_samples": len(labels)}


def _extension(parameters: dict[str, Any], settings: StagewiseSettings, datamodule: ClassificationDataModule,
               out_dir: Path, reporter: Reporter) -> dict[str, Any]:
    spec, weights = load_job_model(parameters["source"])
    model = build_with_weights(spec, weights)
    extra_epochs = int(parameters["extra_epochs"])
    if extra_epochs > 0:
        train(model, datamodule, settings, extension_optim(settings), extra_epochs, reporter)
        save_job_model(out_dir, model, spec, extra={"job": parameters.get("job")})
    model.to(training_device())
    result = {"val_accuracy": evaluate(model, datamodule, split="val")["accuracy"], "depths": list(spec.depths),
              "source_job": parameters.get("source_job"), "extra_epochs": extra_epochs, **cost_facts(spec, settings)}
    if parameters["kind"] == "final":
        card = stagewise_card(settings, datamodule.info)
        result.update(test_and_export(model, spec, datamodule, settings, out_dir, card=card))
        result.update(_start_net_facts(parameters["start"], settings, datamodule))
    else:
        result["test_accuracy"] = evaluate(model, datamodule, split="test")["accuracy"]
    result["default"] = result["test_accuracy"]
    return result


def stagewise_card(settings: StagewiseSettings, info: DatasetInfo) -> ModelCard:
    """The method's card; with a timm donor the searched family is the donor's network, whose origin it records."""
    if not settings.timm_donor:
        return CARD
    origin = import_timm_donor(settings.donor, info).origin
    return dataclasses.replace(CARD, start_origin=origin, method_description=(
        f"Stage-wise depth search (Jordao et al., Stage-Wise NAS): stages of the pretrained {origin.architecture} "
        f"grown while their PLS importance scores rise over the current net's, every candidate starting from the "
        f"donor's first blocks of each stage"))


def _start_net_facts(checkpoint: str, settings: StagewiseSettings,
                     datamodule: ClassificationDataModule) -> dict[str, Any]:
    """The start net, as trained, on the same splits: `start_default` beside the final net's `default`."""
    spec, weights = load_job_model(checkpoint)
    model = build_with_weights(spec, weights).to(training_device())
    cost = cost_facts(spec, settings)
    return {"start_default": evaluate(model, datamodule, split="test")["accuracy"],
            "start_val_accuracy": evaluate(model, datamodule, split="val")["accuracy"],
            "start_depths": list(spec.depths), "start_params": cost["params"], "start_macs": cost["macs"]}
