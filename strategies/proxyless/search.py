"""The ProxylessNAS search loop over an NNI model space: weight steps on the training split, architecture
steps on the validation split, alternating (every `arch_update_every`-th weight step).

A plain loop rather than NNI's one-shot Lightning module, because the two phases need different things
frozen and different gates sampled, and because the loop is the part we measured and made faster (see
benchmarks/supernet_cost.py). It stays NNI-native at the edges: the search space is an NNI ModelSpace, the
result is an NNI sample (label -> value) that `space.to_spec` turns into an ArchSpec.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from trainers.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from trainers.speed import autocast, grad_scaler, resolve_channels_last, resolve_precision

from .binary_gates import GateBank, install_binary_gates
from .gate_cost import expected_gflops, measure_candidate_flops
from .settings import GRADIENT_ESTIMATORS, ProxylessSearchConfig

SUPERNET = "supernet"  # the checkpoint kind


def endless_batches(loader: Iterable) -> Iterator:
    """The loader's batches without end, restarting `iter(loader)` each time it is exhausted.

    Not itertools.cycle: that keeps a reference to every batch of the first pass to replay it, an epoch of
    validation images in memory (about 3 GB of CIFAR-10 at 224 px); here only the current batch is alive.
    """
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "the validation loader yields no batch; raise val_fraction so architecture steps get data."
            )


class ProxylessSearch:
    def __init__(self, space: nn.Module, config: ProxylessSearchConfig, device: torch.device | str = "cpu"):
        if config.gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(f"unknown gradient_estimator {config.gradient_estimator!r}; use {' or '.join(GRADIENT_ESTIMATORS)}.")
        self.config = config
        self.device = torch.device(device)
        self.precision = resolve_precision(config.precision, self.device)  # SpeedError: mixed precision on a CPU
        self.channels_last = resolve_channels_last(config.channels_last, self.device, self.precision)
        self.model = space
        self.bank: GateBank = install_binary_gates(space)
        self.bank.estimator = config.gradient_estimator
        self.candidate_flops = measure_candidate_flops(space, self.bank, config.input_size)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.bank.to(self.device)
        # fp16 only: one loss scaler per optimiser, as the two losses have different scales.
        self.weight_scaler = grad_scaler(self.precision, self.device)
        self.arch_scaler = grad_scaler(self.precision, self.device)
        self.weights = [p for name, p in space.named_parameters()]
        self.weight_optimizer = torch.optim.SGD(
            self.weights, lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
        )
        self.arch_optimizer = torch.optim.Adam(
            self.bank.parameters(), lr=config.arch_lr, betas=config.arch_betas, weight_decay=config.arch_weight_decay
        )
        self.epoch = 0
        self.step = 0
        self.generator = torch.Generator().manual_seed(config.seed)

    # ---- one epoch ------------------------------------------------------------------------------------
    def run_epoch(
        self,
        train_loader: Iterable,
        val_loader: Iterable,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
    ) -> dict[str, float]:
        self._set_lr()
        self.model.train()
        val_batches = endless_batches(val_loader)
        train_loss = torch.zeros((), device=self.device)
        batches = 0
        for batch in itertools.islice(train_loader, limit_train_batches):
            train_loss += self.weight_step(*batch)
            batches += 1
            self.step += 1
            if self.step % self.config.arch_update_every == 0:
                self.arch_step(*next(val_batches))
        self.epoch += 1
        metrics = self.evaluate(val_loader, limit_val_batches)
        metrics["train_loss"] = float(train_loss) / max(1, batches)
        with torch.no_grad():
            metrics["expected_gflops"] = float(expected_gflops(self.bank, self.candidate_flops))
        metrics["lr"] = self.weight_optimizer.param_groups[0]["lr"]
        return metrics

    def _on_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler) -> None:
        """backward + step, through the fp16 loss scaler when there is one (it skips steps with inf gradients)."""
        if scaler is None:
            loss.backward()
            optimizer.step()
            return
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def weight_step(self, images: torch.Tensor, labels: torch.Tensor, pinned: dict[str, int] | None = None) -> torch.Tensor:
        self.bank.resample("weight", self.generator, pinned)
        images, labels = self._on_device(images, labels)
        with autocast(self.precision, self.device):
            loss = F.cross_entropy(self.model(images), labels)
        self.weight_optimizer.zero_grad(set_to_none=True)
        self._step(loss, self.weight_optimizer, self.weight_scaler)
        return loss.detach()

    def arch_step(self, images: torch.Tensor, labels: torch.Tensor, pinned: dict[str, int] | None = None) -> torch.Tensor:
        self.bank.resample("arch", self.generator, pinned)
        images, labels = self._on_device(images, labels)
        # Frozen weights: autograd then computes only activation gradients and the architecture gradient.
        for parameter in self.weights:
            parameter.requires_grad_(False)
        try:
            with autocast(self.precision, self.device):
                loss = F.cross_entropy(self.model(images), labels)
            if self.config.flops_penalty:  # outside autocast: the penalty stays in fp32
                loss = loss + self.config.flops_penalty * expected_gflops(self.bank, self.candidate_flops)
            self.arch_optimizer.zero_grad(set_to_none=True)
            before = self._evaluated_log_mass() if self.config.gradient_estimator == "two_path" else None
            self._step(loss, self.arch_optimizer, self.arch_scaler)
            if before is not None:
                self._keep_unsampled_mass(before)
        finally:
            for parameter in self.weights:
                parameter.requires_grad_(True)
        return loss.detach()

    @torch.no_grad()
    def _evaluated_log_mass(self) -> dict[str, torch.Tensor]:
        return {label: torch.logsumexp(self.bank.alpha[label][indices], 0) for label, indices in self.bank.evaluated.items()}

    @torch.no_grad()
    def _keep_unsampled_mass(self, before: dict[str, torch.Tensor]) -> None:
        """Official ProxylessNAS two-path update: shift the two updated alphas so that their joint softmax mass,
        and so every unsampled candidate's probability, is what it was before the step."""
        for label, indices in self.bank.evaluated.items():
            if len(indices) < len(self.bank.alpha[label]):
                alpha = self.bank.alpha[label]
                alpha[indices] -= torch.logsumexp(alpha[indices], 0) - before[label]

    @torch.no_grad()
    def evaluate(self, loader: Iterable, limit_batches: int | None = None) -> dict[str, float]:
        """Accuracy of the current argmax path on `loader` (the validation split)."""
        self.model.eval()
        self.bank.resample("argmax")
        correct = torch.zeros((), device=self.device)
        loss = torch.zeros((), device=self.device)
        count = 0
        for images, labels in itertools.islice(loader, limit_batches):
            images, labels = self._on_device(images, labels)
            with autocast(self.precision, self.device):
                logits = self.model(images)
            loss += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
            count += labels.numel()
        self.model.train()
        return {"val_accuracy": float(correct) / max(1, count), "val_loss": float(loss) / max(1, count)}

    def _set_lr(self) -> None:
        progress = self.epoch / max(1, self.config.total_epochs)
        lr = 0.5 * self.config.lr * (1 + math.cos(math.pi * progress))
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr

    # ---- results --------------------------------------------------------------------------------------
    def gate_probabilities(self) -> dict[str, list[float]]:
        return self.bank.gate_probabilities()

    def argmax_sample(self) -> dict:
        return self.bank.argmax_sample()

    # ---- resumable checkpoint -------------------------------------------------------------------------
    def save(self, path: Path, extra: dict | None = None) -> None:
        """A trainers.checkpoint container of kind 'supernet': atomic, read back with weights_only."""
        write_checkpoint(path, SUPERNET, {
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()},
            "model": self.model.state_dict(),
            "gates": self.bank.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "generator": self.generator.get_state(),
            "scalers": {name: scaler.state_dict() for name, scaler in self._scalers().items()},
            "extra": extra or {},
        })

    def _scalers(self) -> dict:
        return {name: scaler for name, scaler in (("weight", self.weight_scaler), ("arch", self.arch_scaler))
                if scaler is not None}

    def load(self, path: Path) -> dict:
        """Restore a checkpoint written by `save`; returns its `extra`. CheckpointError names the file."""
        state = read_checkpoint(path, SUPERNET, map_location=self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.bank.load_state_dict(state["gates"])
            self.weight_optimizer.load_state_dict(state["weight_optimizer"])
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
            self.generator.set_state(state["generator"].cpu())
            for name, scaler in self._scalers().items():  # fp16 only; absent in fp32 or older checkpoints
                if name in state.get("scalers", {}):
                    scaler.load_state_dict(state["scalers"][name])
        except (KeyError, RuntimeError, ValueError) as error:  # another space, or a truncated entry
            raise CheckpointError(
                f"{path} does not fit this supernet ({str(error).splitlines()[0][:200]}); delete it to search again."
            ) from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        return state["extra"]
