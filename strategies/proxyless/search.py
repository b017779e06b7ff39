"""The ProxylessNAS search loop over an NNI model space: weight steps on the training split, architecture
steps on the validation split, alternating (every `arch_update_every`-th weight step).

A plain loop rather than NNI's one-shot Lightning module, because the two phases need different things
frozen and different gates sampled, and because the loop is the part we measured and made faster (see
benchmarks/supernet_cost.py). It stays NNI-native at the edges: the search space is an NNI ModelSpace, the
result is an NNI sample (label -> value) that `space.to_spec` turns into an ArchSpec. The resnas trial drives
`run_epoch`; NNI's Python API (strategy.ProxylessStrategy) drives `start_epoch` and `train_step` from Lightning.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from trainers.budget import record_training
from trainers.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from trainers.speed import autocast, grad_scaler, resolve_channels_last, resolve_precision
from trainers.tensorboard import ScalarLog

from .binary_gates import GateBank, install_binary_gates
from .distributed import World, all_reduce_sums, average_gradients, broadcast_parameters
from .gate_cost import expected_gflops, measure_candidate_flops
from .gate_latency import CandidateLatency, expected_latency_ms, latency_loss, load_candidate_latency
from .settings import GRADIENT_ESTIMATORS, ProxylessSearchConfig
from .trajectory import normalised_entropy

SUPERNET = "supernet"  # the checkpoint kind
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> loss


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


def _path_flops_table(candidate_flops: dict | None) -> tuple[int, dict[str, list[int]]] | None:
    """gate_cost's candidate FLOPs as plain ints, so a step's path costs a few list lookups, not tensor indexing.
    A depth choice (BinaryGateRepeat) is not costed per candidate there: its argmax depth stays in the base."""
    if candidate_flops is None:
        return None
    per_label = {label: [int(value) for value in flops.tolist()] for label, flops in candidate_flops["per_label"].items()}
    return int(candidate_flops["base"]), per_label


class ProxylessSearch:
    TENSORBOARD_EVERY = 50  # weight steps between TensorBoard points (Lightning's log_every_n_steps), + each epoch end

    def __init__(self, space: nn.Module, config: ProxylessSearchConfig, device: torch.device | str = "cpu",
                 tensorboard_dir: Path | None = None, bank: GateBank | None = None,
                 criterion: Criterion = F.cross_entropy, world: World | None = None):
        """tensorboard_dir: where the gates' and epochs' scalars go; None: inside an NNI trial its
        NNI_OUTPUT_DIR/tensorboard/search (one run folder: a resumed search goes on in it), else nowhere.
        bank: the gates of a `space` gated already (ProxylessStrategy gates it when NNI initialises it).
        world: this rank of a data-parallel search (proxyless.distributed; the process group is up); None: one."""
        if config.gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(f"unknown gradient_estimator {config.gradient_estimator!r}; use {' or '.join(GRADIENT_ESTIMATORS)}.")
        self.config = config
        self.device = torch.device(device)
        self.precision = resolve_precision(config.precision, self.device)  # SpeedError: mixed precision on a CPU
        self.channels_last = resolve_channels_last(config.channels_last, self.device, self.precision)
        self.model = space
        self.bank: GateBank = bank if bank is not None else install_binary_gates(space)
        self.bank.estimator = config.gradient_estimator
        self.criterion = criterion
        if config.input_size is None and config.flops_penalty:
            raise ValueError("flops_penalty counts FLOPs at input_size; give input_size=(channels, height, width).")
        # None: no input size known (NNI's strategy), so FLOPs are not counted.
        self.candidate_flops = None if config.input_size is None else measure_candidate_flops(space, self.bank, config.input_size)
        self._path_flops_table = _path_flops_table(self.candidate_flops)
        self.candidate_latency = self._candidate_latency(space, config)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.bank.to(self.device)
        if self.candidate_latency is not None:
            self.candidate_latency = self.candidate_latency.to(self.device)
        self.world = world or World()
        if self.world.distributed:  # rank 0's start everywhere; identical averaged steps keep it so
            broadcast_parameters([*self.model.parameters(), *self.model.buffers(), *self.bank.parameters()])
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
        if tensorboard_dir is None and os.environ.get("NNI_OUTPUT_DIR") and self.world.is_main:  # an NNI trial (job_trial loads timm)
            from ..multi_trial.job_trial import trial_tensorboard_root

            tensorboard_dir = trial_tensorboard_root() / "search"
        self.tensorboard = ScalarLog(tensorboard_dir) if tensorboard_dir is not None else None
        self._logged_step = -1

    def _candidate_latency(self, space: nn.Module, config: ProxylessSearchConfig) -> CandidateLatency | None:
        """Every candidate's latency from config.latency_table (measuring what it lacks on its device), or None
        without a table. A table alone reports the expected latency; the loss needs a target too."""
        if config.latency_table is None:
            return None
        if config.input_size is None:
            raise ValueError("a latency loss reads the table at input_size; give input_size=(channels, height, width).")
        return load_candidate_latency(space, self.bank, config.latency_table, config.input_size)

    def expected_latency(self) -> float | None:
        """Expected latency in ms under the current gates, None without a latency table."""
        if self.candidate_latency is None:
            return None
        with torch.no_grad():
            return float(expected_latency_ms(self.bank, self.candidate_latency))

    # ---- one epoch ------------------------------------------------------------------------------------
    def run_epoch(
        self,
        train_loader: Iterable,
        val_loader: Iterable,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
    ) -> dict[str, float]:
        self.start_epoch()
        val_batches = endless_batches(val_loader)
        train_loss = torch.zeros((), device=self.device)
        batches = 0
        for batch in itertools.islice(train_loader, limit_train_batches):
            train_loss += self.train_step(batch, lambda: next(val_batches))
            batches += 1
            if self.tensorboard is not None and self.step % self.TENSORBOARD_EVERY == 0:
                self._log_tensorboard()
        self.epoch += 1
        metrics = self.evaluate(val_loader, limit_val_batches)
        metrics["train_loss"] = float(train_loss) / max(1, batches)
        if self.candidate_flops is not None:
            with torch.no_grad():
                metrics["expected_gflops"] = float(expected_gflops(self.bank, self.candidate_flops))
        if self.candidate_latency is not None:
            metrics["expected_latency_ms"] = self.expected_latency()
        metrics["lr"] = self.weight_optimizer.param_groups[0]["lr"]
        if self.tensorboard is not None:
            self._log_tensorboard({"epoch": self.epoch, **metrics})
        return metrics

    def _log_tensorboard(self, epoch_metrics: dict[str, float] | None = None) -> None:
        """At this weight step: each candidate's gate probability, their mean normalised entropy (1 undecided, 0
        decided), the expected GFLOPs and (with a latency table) the expected latency; with `epoch_metrics` the epoch's too. One small device sync."""
        values: dict[str, float] = dict(epoch_metrics or {})
        values.pop("expected_gflops", None)  # logged below under gates/
        values.pop("expected_latency_ms", None)
        if self.step != self._logged_step:
            probabilities = self.gate_probabilities()
            for label, probs in probabilities.items():
                values.update({f"gates/{label}/{value}": p for value, p in zip(self.bank.candidate_values[label], probs)})
            entropies = [normalised_entropy(probs) for probs in probabilities.values()]
            values["gates/entropy"] = sum(entropies) / max(1, len(entropies))
            if self.candidate_flops is not None:
                with torch.no_grad():
                    values["gates/expected_gflops"] = float(expected_gflops(self.bank, self.candidate_flops))
            if self.candidate_latency is not None:
                values["gates/expected_latency_ms"] = self.expected_latency()
        self.tensorboard.scalars(values, step=self.step)
        self._logged_step = self.step

    def start_epoch(self) -> None:
        """The cosine learning rate of epoch `self.epoch`, and training mode."""
        self._set_lr()
        self.model.train()

    def train_step(self, batch: Sequence[torch.Tensor], val_batch: Callable[[], Sequence[torch.Tensor]]) -> torch.Tensor:
        """A weight step on `batch`; every arch_update_every-th one also an architecture step on `val_batch()`,
        called only then (a validation batch is drawn only when used). Returns the weight step's loss."""
        loss = self.weight_step(*batch)
        self.step += 1
        if self.step % self.config.arch_update_every == 0:
            self.arch_step(*val_batch())
        return loss

    def _on_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler) -> None:
        """backward + step, through the fp16 loss scaler when there is one (it skips steps with inf gradients)."""
        if scaler is None:
            loss.backward()
            self._average_gradients(optimizer)
            optimizer.step()
            return
        scaler.scale(loss).backward()
        self._average_gradients(optimizer)  # scaled grads: every rank then sees the same infs and skips alike
        scaler.step(optimizer)
        scaler.update()

    def _average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.world.distributed:
            average_gradients([p for group in optimizer.param_groups for p in group["params"]], self.world)

    def weight_step(self, images: torch.Tensor, labels: torch.Tensor, pinned: dict[str, int] | None = None) -> torch.Tensor:
        self.bank.resample("weight", self.generator, pinned)
        self._book(images, "supernet_weights")
        images, labels = self._on_device(images, labels)
        with autocast(self.precision, self.device):
            loss = self.criterion(self.model(images), labels)
        self.weight_optimizer.zero_grad(set_to_none=True)
        self._step(loss, self.weight_optimizer, self.weight_scaler)
        return loss.detach()

    def arch_step(self, images: torch.Tensor, labels: torch.Tensor, pinned: dict[str, int] | None = None) -> torch.Tensor:
        self.bank.resample("arch", self.generator, pinned)
        self._book(images, "supernet_architecture")
        images, labels = self._on_device(images, labels)
        # Frozen weights: autograd then computes only activation gradients and the architecture gradient.
        for parameter in self.weights:
            parameter.requires_grad_(False)
        try:
            with autocast(self.precision, self.device):
                loss = self.criterion(self.model(images), labels)
            if self.config.flops_penalty:  # outside autocast: the penalty stays in fp32
                loss = loss + self.config.flops_penalty * expected_gflops(self.bank, self.candidate_flops)
            if self.candidate_latency is not None and self.config.latency_target_ms is not None:  # fp32, reaches alpha
                loss = latency_loss(loss, expected_latency_ms(self.bank, self.candidate_latency), self.config)
            self.arch_optimizer.zero_grad(set_to_none=True)
            before = self._evaluated_log_mass() if self.config.gradient_estimator == "two_path" else None
            self._step(loss, self.arch_optimizer, self.arch_scaler)
            if before is not None:
                self._keep_unsampled_mass(before)
        finally:
            for parameter in self.weights:
                parameter.requires_grad_(True)
        return loss.detach()

    def _book(self, images: torch.Tensor, what: str) -> None:
        """This step's images through the active path, in the training-FLOPs ledger (trainers.budget).

        An architecture step is booked like a weight step of its active path, 3 forwards per image: it skips the
        weight gradients (about one forward less) but also runs the other evaluated candidates forward (two_path:
        one more candidate per gate, about that much more); an estimate, not an exact count. Unknown without an
        input size (NNI's strategy gives none), then nothing is booked. Per rank: each books its own shard.
        """
        if self._path_flops_table is None:
            return
        base, per_label = self._path_flops_table
        active = self.bank.active
        record_training(base + sum(per_label[label][active[label]] for label in per_label), int(images.shape[0]), what)

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
        if self.world.distributed:  # each rank saw its own shard of the split
            correct, loss, total = all_reduce_sums([correct, loss, torch.tensor(float(count), device=self.device)])
            count = int(total)
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
