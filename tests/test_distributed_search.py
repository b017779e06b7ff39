"""Data-parallel search: 2 gloo ranks on the CPU keep bit-identical supernets, and 2 ranks x batch b follow the
1-rank search with batch 2b (same data, same seeds) up to float rounding. The space has no batch norm, which
normalises over each rank's local batch and so breaks the equivalence by design.

The ranks build the space gated by hand (what install_binary_gates makes of the NNI space, checked below):
spawned processes re-import this module, and NNI's ModelSpace pulls in Lightning, 5 s a rank on 2 cores."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from strategies.proxyless import ProxylessSearchConfig
from strategies.proxyless.binary_gates import BinaryGateChoice, GateBank
from strategies.proxyless.distributed import World, free_port, init_process_group, join_ranks, leave, shard_loader, start_ranks
from strategies.proxyless.search import ProxylessSearch

BATCH = 4  # per rank; the 1-rank reference takes 2 x BATCH
STEPS = 6
TOLERANCE = 1e-5


def candidates() -> tuple[list[nn.Module], list[nn.Module]]:
    return [nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 5, padding=2), nn.Conv2d(2, 4, 1)], [nn.ReLU(), nn.Tanh(), nn.Mish()]


class NoNorm(nn.Module):
    def __init__(self, conv: nn.Module, act: nn.Module):
        super().__init__()
        self.conv, self.act, self.fc = conv, act, nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def nni_space() -> tuple[nn.Module, GateBank]:
    """The NNI ModelSpace, gated by install_binary_gates."""
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace

    from strategies.proxyless.binary_gates import install_binary_gates

    class NoNormSpace(ModelSpace, NoNorm):
        def __init__(self):
            convs, acts = candidates()
            ModelSpace.__init__(self)
            NoNorm.__init__(self, LayerChoice(convs, label="conv"), LayerChoice(acts, label="act"))

    space = NoNormSpace()
    return space, install_binary_gates(space)


def hand_gated_space() -> tuple[nn.Module, GateBank]:
    """The same supernet without importing NNI: the gates install_binary_gates would put in."""
    convs, acts = candidates()
    bank = GateBank({"conv": [0, 1, 2], "act": [0, 1, 2]})
    return NoNorm(BinaryGateChoice("conv", [0, 1, 2], convs, bank), BinaryGateChoice("act", [0, 1, 2], acts, bank)), bank


def data() -> tuple[TensorDataset, TensorDataset]:
    generator = torch.Generator().manual_seed(7)
    images, labels = torch.randn(96, 2, 6, 6, generator=generator), torch.randint(0, 3, (96,), generator=generator)
    return TensorDataset(images[:64], labels[:64]), TensorDataset(images[64:], labels[64:])


def run_search(world: World, batch: int, nni: bool = False) -> dict[str, torch.Tensor]:
    """STEPS weight steps, each followed by an architecture step; the final alphas and weights."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    space, bank = nni_space() if nni else hand_gated_space()
    config = ProxylessSearchConfig(input_size=(2, 6, 6), lr=0.1, arch_lr=0.05, seed=3, total_epochs=1)
    search = ProxylessSearch(space, config, world=world, bank=bank)
    train_set, val_set = data()
    train, val = DataLoader(train_set, batch_size=batch), DataLoader(val_set, batch_size=batch)
    if world.distributed:
        train, val = shard_loader(train, world, shuffle=False), shard_loader(val, world, shuffle=False)
    search.run_epoch(train, val, limit_train_batches=STEPS)
    state = {f"alpha.{label}": alpha.detach().clone() for label, alpha in search.bank.alpha.items()}
    state.update({f"weight.{name}": value.detach().clone() for name, value in space.state_dict().items()})
    state["argmax"] = torch.tensor(list(search.bank.argmax_indices().values()))
    return state


def rank_worker(rank: int, world_size: int, port: int, out: str | None = None) -> dict[str, torch.Tensor]:
    world = World(rank=rank, size=world_size)
    init_process_group(world, backend="gloo", port=port)
    try:
        state = run_search(world, BATCH)
    finally:
        leave()
    if out is not None:
        torch.save(state, Path(out) / f"rank{rank}.pt")
    return state


def test_two_gloo_ranks_agree_and_match_one_rank_with_the_joint_batch(tmp_path):
    port, threads = free_port(), torch.get_num_threads()
    # This process is rank 0, as in the trial; the reference runs while the spawned rank 1 imports.
    ranks = start_ranks(rank_worker, 2, args=(port, str(tmp_path)))
    try:
        reference = run_search(World(), 2 * BATCH, nni=True)
        rank0 = rank_worker(0, 2, port)
    finally:
        torch.set_num_threads(threads)
        join_ranks(ranks)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:  # bit-identical supernets: same alphas, weights and argmax on both ranks
        assert torch.equal(rank0[key], rank1[key]), key
    assert reference.keys() == rank0.keys()  # the hand-gated ranks hold the NNI space's supernet
    assert torch.equal(rank0["argmax"], reference["argmax"])
    alpha_gap = max(float((rank0[k] - reference[k]).abs().max()) for k in rank0 if k.startswith("alpha."))
    weight_gap = max(float((rank0[k] - reference[k]).abs().max()) for k in rank0 if k.startswith("weight."))
    moved = max(float(reference[k].abs().max()) for k in reference if k.startswith("alpha."))
    print(f"2 ranks x {BATCH} vs 1 rank x {2 * BATCH}, {STEPS} steps: max |d alpha| {alpha_gap:.3g}, "
          f"max |d weight| {weight_gap:.3g} (alphas reached {moved:.3g})")
    assert moved > 1e-3  # the architecture did move, so the comparison means something
    assert alpha_gap < TOLERANCE and weight_gap < TOLERANCE
