"""What every multi-trial job (hill climbing, layer pruning) does the same way inside its trial.

The data module and input size (ProxylessNAS trials use those two as well), training with per-epoch reports, the job folder (model.ckpt + arch.json + result.json,
each written atomically) and idempotence: a job whose result.json
exists reports it again and trains nothing, so a job re-issued after `nnictl resume` costs seconds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from search_spaces import ArchSpec, build_model, export_to_timm, measure_cost
from trainers import (
    ClassificationDataModule,
    FitResult,
    OptimConfig,
    dataset_info,
    evaluate,
    fit,
    load_checkpoint,
    make_datamodule,
    save_checkpoint,
)
from trainers.atomic import atomic_write_text
from trainers.system import ExtraLoss

from .data_settings import DataSettings
from .multi_trial import MODEL_FILE, RESULT_FILE, SPEC_FILE
from .settings import SettingsError

logger = logging.getLogger(__name__)


def input_size(data: DataSettings) -> tuple[int, int, int]:
    info = dataset_info(data.dataset, data.data_dir)
    size = data.image_size or info.image_size
    return (info.in_channels, size, size)


def make_job_datamodule(data: DataSettings) -> ClassificationDataModule:
    datamodule = make_datamodule(
        data.dataset,
        data_dir=data.data_dir,
        batch_size=data.batch_size,
        val_fraction=data.val_fraction,
        seed=data.seed,
        image_size=input_size(data)[1],
        augment=data.augment,
        num_workers=data.num_workers,
    )
    datamodule.setup("fit")
    return datamodule


def accelerator() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def train(
    model: nn.Module,
    datamodule: ClassificationDataModule,
    data: DataSettings,
    optim: OptimConfig,
    epochs: int,
    reporter,
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
        accelerator=accelerator(),
        limit_train_batches=data.limit_train_batches,
        limit_val_batches=data.limit_val_batches,
    )


def sgdr_optim(lr_start: float, lr_end: float, momentum: float, weight_decay: float) -> OptimConfig:
    """NASH's SGDR run: cosine annealing from lr_start to lr_end over the run's epochs, restarted per run."""
    return OptimConfig(optimizer="sgd", lr=lr_start, lr_min=lr_end, momentum=momentum, nesterov=True,
                       weight_decay=weight_decay, schedule="cosine")


# ---- the job folder ---------------------------------------------------------------------------------------------
def finished_result(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable; running the job again", path)
        return None


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    """Written last: its presence means the checkpoint beside it is complete."""
    atomic_write_text(out_dir / RESULT_FILE, json.dumps(result, indent=1, sort_keys=True))


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
        raise SettingsError(f"{checkpoint} carries no ArchSpec; write it with strategies.job_trial.save_job_model.")
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
    info = dataset_info(data.dataset, data.data_dir)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    test = evaluate(model, datamodule, split="test")
    export_dir = export_to_timm(spec, model.cpu(), out_dir / "timm_export", mean=info.mean, std=info.std,
                                input_size=input_size(data))
    return {"test_accuracy": test["accuracy"], "export_dir": str(export_dir)}
