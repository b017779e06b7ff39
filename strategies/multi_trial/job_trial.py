"""What every multi-trial job (hill climbing, layer pruning) does the same way inside its trial process.

The start net, training with per-epoch reports, the job model (model.ckpt + arch.json, see job_files), cost
facts, and the final test + timm export (the ProxylessNAS trial tests and exports through the same two
functions). Imported by trials only: it loads torch, timm and Lightning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import nn

from search_spaces.builder import build_model
from search_spaces.cost import measure_cost
from search_spaces.export import export_to_timm
from search_spaces.spec import ArchSpec
from trainers import (
    ClassificationDataModule,
    DatasetInfo,
    FitResult,
    OptimConfig,
    dataset_info,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
    training_device,
)
from trainers.atomic import atomic_write_text
from trainers.system import ExtraLoss

from ..data import DataSettings, export_normalization, input_size, make_job_datamodule
from ..reporting import Reporter
from ..settings import SettingsError, parse_settings
from .job_files import MODEL_FILE, SPEC_FILE, finished_result, write_result

logger = logging.getLogger(__name__)
Settings = TypeVar("Settings", bound=DataSettings)
JobBody = Callable[[Settings, ClassificationDataModule, Path], dict[str, Any]]


def run_job(parameters: dict[str, Any], output_dir: Path, reporter: Reporter, settings_class: type[Settings],
            body: JobBody) -> dict[str, Any]:
    """What every multi-trial job does around its own work.

    A job whose folder holds a result (re-issued after a resume) reports it and trains nothing. Otherwise the
    search's settings are parsed from the parameters, the seed set, the data module set up, and
    body(settings, datamodule, job folder) computes the result, which is written last (its presence means the
    job's files are complete) and reported as the trial's final metric.
    """
    out_dir = Path(parameters.get("out_dir") or output_dir)
    done = finished_result(out_dir)
    if done is not None:
        logger.info("%s finished before; reporting its result again", out_dir)
        reporter.final(done)
        return done
    settings = parse_settings(settings_class, parameters.get("settings"), "trial parameters")
    torch.manual_seed(settings.seed)
    result = body(settings, make_job_datamodule(settings), out_dir)
    write_result(out_dir, result)
    reporter.final(result)
    return result


def load_start_spec(start: str, named: dict[str, Callable[[DatasetInfo], ArchSpec]], data: DataSettings) -> ArchSpec:
    """A method's start net: one of its `named` nets for the dataset, or an ArchSpec JSON file that fits it."""
    info = dataset_info(data.dataset, data.data_dir)
    if start in named:
        return named[start](info)
    path = Path(start)
    if not path.is_file():
        raise SettingsError(f"start net {path} does not exist; give an ArchSpec JSON path or one of {', '.join(named)}.")
    spec = ArchSpec.from_json(path.read_text())
    if spec.head.num_classes != info.num_classes or spec.in_channels != info.in_channels:
        raise SettingsError(
            f"start net {path} takes {spec.in_channels} channels and {spec.head.num_classes} classes; "
            f"{data.dataset} has {info.in_channels} and {info.num_classes}: edit its head/in_channels."
        )
    return spec


def train(
    model: nn.Module,
    datamodule: ClassificationDataModule,
    data: DataSettings,
    optim: OptimConfig,
    epochs: int,
    reporter: Reporter,
    *,
    extra_losses: Sequence[ExtraLoss] = (),
    report_extra: dict[str, Any] | None = None,
) -> FitResult:
    """fit() with every epoch's validation accuracy reported as `default` (the dashboard's curve)."""

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        reporter.intermediate({"default": metrics.get("val_accuracy", float("nan")), "epoch": epoch,
                               **{k: v for k, v in metrics.items() if k != "epoch"}, **(report_extra or {})})

    return fit(
        model,
        datamodule,
        optim,
        epochs,
        extra_losses=extra_losses,
        on_epoch_end=on_epoch_end,
        seed=data.seed,
        limit_train_batches=data.limit_train_batches,
        limit_val_batches=data.limit_val_batches,
        precision=data.precision,
        channels_last=data.channels_last,
    )


# ---- the job model ----------------------------------------------------------------------------------------------
def save_job_model(out_dir: Path, model: nn.Module, spec: ArchSpec, extra: dict[str, Any] | None = None) -> Path:
    """model.ckpt with the spec inside, and arch.json beside it for tuners (which read JSON, not torch)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / MODEL_FILE, model.cpu(), arch_spec=spec, extra=extra)
    atomic_write_text(out_dir / SPEC_FILE, spec.to_json())
    return out_dir / MODEL_FILE


def load_job_model(checkpoint: str | Path) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The spec and weights of an earlier job's checkpoint (weights_only, no code unpickled)."""
    payload = load_checkpoint(Path(checkpoint))
    if payload.get("arch_spec") is None:
        raise SettingsError(f"{checkpoint} carries no ArchSpec; write it with save_job_model.")
    return ArchSpec.from_json(payload["arch_spec"]), payload["state_dict"]


def build_with_weights(spec: ArchSpec, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model(spec)
    model.load_state_dict(state_dict, strict=True)
    return model


def cost_facts(spec: ArchSpec, data: DataSettings) -> dict[str, int]:
    cost = measure_cost(spec, input_size=input_size(data))
    return {"params": cost.params, "flops": cost.flops, "macs": cost.macs}


def test_and_export(model: nn.Module, spec: ArchSpec, datamodule: ClassificationDataModule, data: DataSettings,
                    out_dir: Path) -> dict[str, Any]:
    """Test-split accuracy and the timm folder of the final network."""
    model.to(training_device())
    test = evaluate(model, datamodule, split="test")
    export_dir = export_to_timm(spec, model.cpu(), out_dir / "timm_export", **export_normalization(data),
                                input_size=input_size(data))
    return {"test_accuracy": test["accuracy"], "test_split": datamodule.test_source, "export_dir": str(export_dir)}
