"""One NASH job: pretrain the start net, train one child, or give the best net its final training.

Parameters (from HillClimbingTuner): kind (start | child | final), settings, epochs, out_dir, and for children
`parent` (a checkpoint) + `morphisms`; for the final job `parent` (the best) and `start` (the start net).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from search_spaces import ArchSpec, build_model, nash_start_spec
from search_spaces.morphism_ops import Morphism
from search_spaces.morphisms import apply_morphisms
from trainers import dataset_info, evaluate

from .hill_climbing_settings import HillClimbingSettings
from .job_trial import (
    build_with_weights,
    cost_facts,
    finished_result,
    load_job_model,
    make_job_datamodule,
    save_job_model,
    sgdr_optim,
    test_and_export,
    train,
    write_result,
)
from .settings import SettingsError, parse_settings

logger = logging.getLogger(__name__)


def start_spec(settings: HillClimbingSettings) -> ArchSpec:
    info = dataset_info(settings.dataset, settings.data_dir)
    if settings.start == "nash":
        return nash_start_spec(info.num_classes, tuple(settings.start_widths), info.in_channels)
    path = Path(settings.start)
    if not path.is_file():
        raise SettingsError(f"start net {path} does not exist; give an ArchSpec JSON path or 'nash'.")
    spec = ArchSpec.from_json(path.read_text())
    if spec.head.num_classes != info.num_classes or spec.in_channels != info.in_channels:
        raise SettingsError(
            f"start net {path} takes {spec.in_channels} channels and {spec.head.num_classes} classes; "
            f"{settings.dataset} has {info.in_channels} and {info.num_classes}: edit its head/in_channels."
        )
    return spec


def run_hill_climbing_trial(parameters: dict[str, Any], output_dir: Path, reporter) -> dict[str, Any]:
    out_dir = Path(parameters.get("out_dir") or output_dir)
    done = finished_result(out_dir)
    if done is not None:  # re-issued after a resume: report what was computed, train nothing
        logger.info("%s finished before; reporting its result again", out_dir)
        reporter.final(done)
        return done
    settings = parse_settings(HillClimbingSettings, parameters.get("settings"), "trial parameters")
    kind, epochs = parameters.get("kind"), int(parameters["epochs"])
    torch.manual_seed(settings.seed)
    datamodule = make_job_datamodule(settings)
    optim = sgdr_optim(settings.lr_start, settings.lr_end, settings.momentum, settings.weight_decay)

    if kind == "start":
        spec = start_spec(settings)
        model, facts = build_model(spec), {}
    elif kind in ("child", "final"):
        spec, state_dict = load_job_model(parameters["parent"])
        morphisms = [Morphism.from_dict(item) for item in parameters.get("morphisms", [])]
        spec, state_dict = apply_morphisms(spec, state_dict, morphisms)
        model = build_with_weights(spec, state_dict)
        facts = {"parent": parameters.get("parent_job"), "morphisms": [m.op for m in morphisms]}
    else:
        raise SettingsError(f"unknown hill-climbing job kind {kind!r}; use start, child or final.")

    fitted = train(model, datamodule, settings, optim, epochs, reporter) if epochs > 0 else None
    val_accuracy = fitted.final_val_accuracy if fitted else evaluate(model, datamodule, split="val")["accuracy"]
    save_job_model(out_dir, model, spec, extra={"job": parameters.get("job"), "epochs": epochs})
    result = {
        "default": val_accuracy,
        "val_accuracy": val_accuracy,
        "job": parameters.get("job"),
        "train_seconds": round(fitted.seconds, 1) if fitted else 0.0,
        **cost_facts(spec, settings),
        **facts,
    }
    if kind == "final":
        result.update(_final_facts(model, spec, datamodule, settings, out_dir, parameters["start"]))
    write_result(out_dir, result)
    reporter.final(result)
    return result


def _final_facts(model, spec: ArchSpec, datamodule, settings: HillClimbingSettings, out_dir: Path,
                 start_checkpoint: str) -> dict[str, Any]:
    """`default` becomes the test accuracy; `start_default` is the start net's, measured the same way."""
    tested = test_and_export(model, spec, datamodule, settings, out_dir)
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
