"""One ResBuilder job: a With Reg pipeline step, a No Reg RI / WI training, or the final test and export."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import torch

from search_spaces.builder import build_model
from search_spaces.edits.resbuilder import (
    WidthBudget,
    insert_random_block,
    morphnet_width_step,
    remove_small_blocks,
    removable_block_means,
)
from search_spaces.model_card import ModelCard
from search_spaces.spec import WIDTH_COUNT, ArchSpec, resbuilder_start_spec, resnet_spec
from trainers import OptimConfig, evaluate
from trainers.regularizers import layer_lasso_term, morphnet_term

from ..data import input_size
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
from .settings import LayerPruningSettings


def start_net(settings: LayerPruningSettings) -> StartNet:
    """RB-0Net ("rb0"), ResNet-18 with the CIFAR stem ("rb_r18"), an ArchSpec file, or a pretrained timm ResNet
    with its weights."""
    named = {
        "rb0": lambda info: resbuilder_start_spec(info.num_classes, settings.start_width, info.in_channels),
        "rb_r18": lambda info: resnet_spec(18, num_classes=info.num_classes, stem="cifar", in_channels=info.in_channels),
    }
    return load_start_net(settings.start, named, settings)


def start_spec(settings: LayerPruningSettings) -> ArchSpec:
    """The start net's spec alone (no weights are kept)."""
    return start_net(settings).spec


def shape_facts(spec: ArchSpec) -> dict[str, Any]:
    """Depth counted like ResNet-18's 18 (convs on the main path + the dense layer), widths per layer."""
    first_stage = [spec.stem.out_channels] + [max(block.widths) for block in spec.stages[0].blocks]
    return {
        "depth": 1 + sum(WIDTH_COUNT[block.kind] for _, _, block in spec.iter_blocks()) + 1,
        "blocks": sum(len(stage.blocks) for stage in spec.stages),
        "widest_first_stage": max(first_stage),
        "widths": [spec.stem.out_channels] + [list(block.widths) for _, _, block in spec.iter_blocks()],
    }


def lasso_facts(spec: ArchSpec, state_dict: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per removable block, the mean |w| of its convs: what the next step's removal reads."""
    removable = removable_block_means(spec, state_dict)
    return {f"layer{stage}.{index}": means for (stage, index), means in removable.items()}


def run_layer_pruning_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    return run_job(parameters, output_dir, reporter, LayerPruningSettings,
                   lambda settings, datamodule, out_dir: _job(parameters, settings, datamodule, out_dir, reporter))


def _job(parameters: dict[str, Any], settings: LayerPruningSettings, datamodule, out_dir: Path,
         reporter: Reporter) -> dict[str, Any]:
    kind = parameters.get("kind")
    if kind == "final":
        result = _final(parameters, settings, datamodule, out_dir)
    else:
        spec, model, facts = _prepare(kind, parameters, settings)
        # lambda_0 is the paper's Keras kernel regulariser: conv and dense kernels only, never the BN scales
        optim = OptimConfig(optimizer="adam", lr=settings.lr, weight_decay=settings.weight_decay,
                            weight_decay_on="kernels", schedule="none")
        extra_losses = _regularizers(spec, settings) if kind == "with_reg" else []
        fitted = train(model, datamodule, settings, optim, int(parameters["epochs"]), reporter,
                       extra_losses=extra_losses, report_extra={"step": parameters["step"]})
        save_job_model(out_dir, model, spec, extra={"job": parameters.get("job")})
        result = {"default": fitted.final_val_accuracy, "val_accuracy": fitted.final_val_accuracy, "variant": kind,
                  "step": parameters["step"], "job": parameters.get("job"), "zeta": settings.zeta,
                  **cost_facts(spec, settings), **shape_facts(spec), **facts}
        if kind == "with_reg":
            result["conv_mean_abs"] = lasso_facts(spec, model.state_dict())
    return result


def _prepare(kind: str, parameters: dict[str, Any], settings: LayerPruningSettings):
    """The network this job trains, and what was done to get it."""
    if kind == "with_reg":
        if parameters.get("parent") is None:  # step 0: the start net (a pretrained one keeps its weights)
            start = start_net(settings)
            return start.spec, start.build(), {"edit": "none", **start.facts()}
        spec, state_dict = load_job_model(parameters["parent"])
        facts: dict[str, Any] = {"edit": parameters["edit"], "removed": []}
        if not settings.morphnet_only:  # greedy out: blocks LayerLasso drove below tau during the last step
            spec, state_dict, facts["removed"] = remove_small_blocks(spec, state_dict, settings.tau_lasso)
        if parameters["edit"] == "insert":
            spec, state_dict, facts["inserted"] = insert_random_block(
                spec, state_dict, random.Random(parameters["edit_seed"]))
        elif parameters["edit"] == "morphnet":
            spec, state_dict, facts["morphnet"] = morphnet_width_step(
                spec, state_dict, input_size(settings), settings.zeta, settings.gamma_threshold,
                budget=latency_width_budget(settings))
        return spec, build_with_weights(spec, state_dict), facts
    spec, state_dict = load_job_model(parameters["source"])
    if kind == "no_reg_ri":
        return spec, build_model(spec), {}
    if kind == "no_reg_wi":
        return spec, build_with_weights(spec, state_dict), {}
    raise SettingsError(f"unknown layer-pruning job kind {kind!r}; use with_reg, no_reg_ri, no_reg_wi or final.")


def latency_width_budget(settings: LayerPruningSettings) -> WidthBudget | None:
    """With a latency target, MorphNet's width step keeps the predicted latency within it instead of FLOPs within
    zeta (widths the table lacks are estimated from their family; the trial then measures the chosen net's parts
    into the table when it runs on the table's device, and reports that prediction)."""
    budget = settings.latency_budget(input_size(settings))
    if budget is None:
        return None
    return WidthBudget(lambda spec: budget.predict(spec).total_ms, budget.target_ms, "ms of predicted latency",
                       "raise latency_target_ms")


def _regularizers(spec: ArchSpec, settings: LayerPruningSettings) -> list:
    terms = [morphnet_term(settings.lambda_morphnet, spec, input_size(settings), settings.gamma_threshold)]
    if not settings.morphnet_only:
        terms.append(layer_lasso_term(settings.lambda_lasso))
    return terms


CARD = ModelCard(method="layer_pruning", method_description="ResBuilder layer pruning (Burghoff et al., ResBuilder): "
                 "residual blocks inserted at random and removed by LayerLasso, widths by MorphNet under a FLOP budget")


def _final(parameters: dict[str, Any], settings: LayerPruningSettings, datamodule, out_dir: Path) -> dict[str, Any]:
    spec, state_dict = load_job_model(parameters["source"])
    model = build_with_weights(spec, state_dict)
    val_accuracy = evaluate(model, datamodule, split="val")["accuracy"]
    card = dataclasses.replace(CARD, start_origin=start_origin(parameters))
    tested = test_and_export(model, spec, datamodule, settings, out_dir, card=card)
    source = parameters.get("source_result") or {}
    return {"default": tested["test_accuracy"], "val_accuracy": val_accuracy, "zeta": settings.zeta,
            "variant": source.get("variant"), "step": source.get("step"), "job": parameters.get("source_job"),
            **cost_facts(spec, settings), **shape_facts(spec), **tested}
