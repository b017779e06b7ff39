"""Data-parallel ProxylessNAS search: one process per GPU (NCCL) or per CPU worker (gloo), one supernet each.

What is kept identical on every rank, and how:

- the sampled paths: every rank draws them with its own `ProxylessSearch.generator`, seeded with the same seed
  and used for nothing else, from alphas that are bit-identical (below). Chosen over "rank 0 samples and
  broadcasts": no collective and no device sync per step, and the generator's state is already in
  supernet.ckpt, so a resumed search samples the same paths on every rank without extra state.
- the parameters: rank 0's weights and alphas are broadcast once at the start (and after a resume every rank
  loads the same checkpoint); after that every rank applies the same averaged gradients with the same
  optimiser, so the copies never drift.
- the gradients: after each backward, weight or architecture, the grads of the optimiser's parameters are
  averaged with one all-reduce over a flat buffer. Not DDP's wrapper: a sampled-out path has no grad, which DDP
  handles only with find_unused_parameters (a graph walk per step), and the architecture step freezes the
  weights, which DDP's bucketed hooks do not expect. A parameter without a grad keeps None (identical paths
  make it None on every rank), so SGD's momentum and weight decay skip it exactly as in a single process.

Each rank reads its own shard of the train and val data (DistributedSampler). Batch norm normalises over each
rank's local batch, so with BN the k-rank search is not the 1-rank search with a k-times batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel search; World() is the single process."""

    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_world() -> World | None:
    """The world torchrun (or any launcher setting WORLD_SIZE and RANK) started this process in, else None."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return World(rank=int(os.environ["RANK"]), size=int(os.environ["WORLD_SIZE"]))
    return None


def visible_gpu_count() -> int:
    """GPUs this trial may use: NNI's trialGpuNumber k gives it CUDA_VISIBLE_DEVICES with k indices."""
    if not torch.cuda.is_available():
        return 0
    return torch.cuda.device_count()


def requested_world_size(world_size: int | None) -> int:
    """world_size from the settings, else one rank per visible GPU (at least one)."""
    if world_size is not None:
        return world_size
    return max(1, visible_gpu_count())


def init_process_group(world: World, backend: str | None = None, address: str = "127.0.0.1", port: int = 29517) -> None:
    """Join the world's process group; NCCL on CUDA, gloo on the CPU. torchrun's MASTER_ADDR/PORT win."""
    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", address)
    os.environ.setdefault("MASTER_PORT", str(port))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(rank_device(world))
    dist.init_process_group(backend, rank=world.rank, world_size=world.size)


def rank_device(world: World) -> torch.device:
    """Rank r's GPU (r modulo the visible ones), or the CPU."""
    if torch.cuda.is_available():  # torchrun's LOCAL_RANK: the rank on this machine
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", world.rank)) % torch.cuda.device_count())
    return torch.device("cpu")


@torch.no_grad()
def broadcast_parameters(tensors: Iterable[torch.Tensor]) -> None:
    """Give every rank rank 0's values (weights, alphas, buffers), so identical gradients keep them identical."""
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


@torch.no_grad()
def average_gradients(parameters: Sequence[torch.Tensor], world: World) -> None:
    """Replace each present grad by its mean over the ranks, in one all-reduce over a flat buffer.

    Parameters without a grad (sampled-out paths, frozen weights) stay None; the set must be the same on every
    rank, which identical path sampling guarantees, and is checked because a mismatch would hang NCCL.
    """
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    count = sum(grad.numel() for grad in grads)
    device = grads[0].device if grads else next(iter(parameters)).device
    sizes = torch.tensor([count, -count], device=device, dtype=torch.float64)
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
    if sizes[0] != count or -sizes[1] != count:
        raise RuntimeError("the ranks sampled different paths (their gradients differ in size); give every rank the same seed.")
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def all_reduce_sums(values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Sums over the ranks of scalar tensors (an evaluation's correct, loss and count), in one all-reduce."""
    stacked = torch.stack([value.double().reshape(()) for value in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def shard_loader(loader: Any, world: World, shuffle: bool, seed: int = 0) -> DataLoader:
    """The same DataLoader over rank `world.rank`'s 1/size of its dataset; batch size stays per rank.

    Call `set_shard_epoch(loader, epoch)` before each epoch so shuffled shards reshuffle as one permutation.
    """
    if not isinstance(loader, DataLoader):
        raise ValueError("a multi-GPU search shards DataLoaders only; set data_on_device to false.")
    sampler = DistributedSampler(loader.dataset, num_replicas=world.size, rank=world.rank, shuffle=shuffle,
                                 seed=seed, drop_last=False)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last, collate_fn=loader.collate_fn,
                      persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False)


def set_shard_epoch(loader: Any, epoch: int) -> None:
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def start_ranks(worker: Callable[..., None], world_size: int, args: tuple = ()) -> Any:
    """Start ranks 1..world_size-1 as spawned processes running worker(rank, world_size, *args); the caller
    is rank 0 (it holds NNI's reporter and writes the files). Returns the context to `join()` afterwards."""
    import torch.multiprocessing as mp

    return mp.start_processes(_rank_entry, args=(worker, world_size, args), nprocs=world_size - 1, join=False,
                              start_method="spawn")


def join_ranks(context: Any) -> None:
    """Wait for the ranks start_ranks started; a rank's exception is raised here."""
    while not context.join():
        pass


def stop_ranks(context: Any) -> None:
    """End the spawned ranks (rank 0 failed: they would wait for it in their next collective)."""
    for process in context.processes:
        if process.is_alive():
            process.terminate()
    for process in context.processes:
        process.join()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the spawned ranks' rendezvous."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_entry(index: int, worker: Callable[..., None], world_size: int, args: tuple) -> None:
    worker(index + 1, world_size, *args)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
