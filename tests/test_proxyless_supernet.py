"""The binary-gate supernet: exact estimator, phases that compute only what they need, argmax export,
a FLOPs term that reaches alpha, and a resumable search loop."""

from dataclasses import fields

import pytest
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn
from torch.nn import functional as F

from search_spaces import ScopedResNet50, build_model, resnet_spec
from search_spaces.latency_table import DeviceSettings, LatencyTable
from strategies.proxyless.binary_gates import BinaryGateChoice, install_binary_gates
from strategies.proxyless.gate_cost import expected_gflops
from strategies.proxyless import ProxylessSearchConfig, ProxylessSettings
from strategies.proxyless.search import ProxylessSearch
from strategies.settings import parse_settings


class TinySpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.conv = LayerChoice([nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 5, padding=2), nn.Conv2d(2, 4, 1)], label="conv")
        self.act = LayerChoice([nn.ReLU(), nn.Tanh(), nn.Mish()], label="act")
        self.act_again = LayerChoice([nn.ReLU(), nn.Tanh(), nn.Mish()], label="act")  # shares the decision
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.act_again(self.act(self.conv(x))).mean((2, 3)))


def reference_conv_alpha_grad(model, bank, x, y, evaluated):
    """dL/dalpha_i = sum_j <dL/dy, o_j> p_j (delta_ij - p_i), by hand, over the evaluated candidates."""
    active = bank.active["conv"]
    act, act_again = (m.candidates[bank.active["act"]] for m in (model.act, model.act_again))
    with torch.no_grad():
        probs = torch.softmax(bank.alpha["conv"][evaluated], 0)
    out = model.conv.candidates[active](x).detach().requires_grad_(True)
    loss = F.cross_entropy(model.fc(act_again(act(out)).mean((2, 3))), y)
    (grad_out,) = torch.autograd.grad(loss, out)
    binary = [(grad_out * model.conv.candidates[j](x)).sum() for j in evaluated]
    reference = torch.zeros(3)
    for i_pos, i in enumerate(evaluated):
        reference[i] = sum(binary[j] * probs[j] * (float(i_pos == j) - probs[i_pos]) for j in range(len(evaluated)))
    return reference


@pytest.mark.parametrize("estimator", ["full", "two_path"])
def test_architecture_gradient_equals_the_binary_gate_estimator(estimator):
    torch.manual_seed(0)
    model = TinySpace()
    bank = install_binary_gates(model)
    with torch.no_grad():
        for alpha in bank.alpha.values():
            alpha.normal_()
    bank.estimator = estimator
    x, y = torch.randn(5, 2, 6, 6), torch.randint(0, 3, (5,))
    bank.resample("arch", torch.Generator().manual_seed(1))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    F.cross_entropy(model(x), y).backward()
    expected = reference_conv_alpha_grad(model, bank, x, y, bank.evaluated["conv"])
    assert len(bank.evaluated["conv"]) == (3 if estimator == "full" else 2)
    torch.testing.assert_close(bank.alpha["conv"].grad, expected, rtol=1e-5, atol=1e-7)


def test_shared_label_is_one_decision():
    model = TinySpace()
    bank = install_binary_gates(model)
    assert bank.labels == ["conv", "act"]
    assert isinstance(model.act, BinaryGateChoice) and model.act.label == model.act_again.label == "act"


def tiny_search(**config) -> ProxylessSearch:
    torch.manual_seed(0)
    space = ScopedResNet50("s", width_multiplier=1 / 16, stem="cifar", num_classes=10)
    return ProxylessSearch(space, ProxylessSearchConfig(input_size=(3, 16, 16), **config))


def path_state_dict(search: ProxylessSearch) -> dict:
    """The supernet weights of the active path, under the standalone network's (timm) names."""
    renamed = {}
    gates = {name: m for name, m in search.model.named_modules() if isinstance(m, BinaryGateChoice)}
    for key, value in search.model.state_dict().items():
        gate = next((g for g in gates if key.startswith(g + ".candidates.")), None)
        if gate is None:
            renamed[key] = value
            continue
        index, rest = key[len(gate) + len(".candidates."):].split(".", 1)
        if int(index) == search.bank.active[gates[gate].label]:
            renamed[f"{gate}.{rest}"] = value
    return renamed


def test_weight_step_is_the_plain_network_of_the_sampled_path():
    search = tiny_search()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    search.bank.resample("weight", search.generator)
    plain = build_model(search.model.to_spec(
        {label: search.bank.candidate_values[label][i] for label, i in search.bank.active.items()}
    ))
    plain.load_state_dict(path_state_dict(search), strict=True)
    search.model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(search.model(x), plain(x))
    # Gradients of the shared weights match the plain path's, and alpha gets none in the weight phase.
    search.model.train(), plain.train()
    F.cross_entropy(search.model(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    torch.testing.assert_close(search.model.layer4[0].conv1.weight.grad, plain.layer4[0].conv1.weight.grad)
    assert all(alpha.grad is None for alpha in search.bank.alpha.values())


def test_arch_step_computes_no_weight_gradient_and_weight_step_no_arch_gradient():
    search = tiny_search()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    search.arch_step(x, y)
    assert all(p.grad is None for p in search.model.parameters())
    assert all(p.requires_grad for p in search.model.parameters())  # unfrozen again afterwards
    assert any(alpha.grad.abs().sum() > 0 for alpha in search.bank.alpha.values())
    search.arch_optimizer.zero_grad(set_to_none=True)
    search.weight_step(x, y)
    assert all(alpha.grad is None for alpha in search.bank.alpha.values())
    assert search.model.fc.weight.grad is not None


def test_argmax_sample_takes_the_largest_architecture_parameter():
    search = tiny_search()
    with torch.no_grad():
        search.bank.alpha["layer4_1_kernel"].copy_(torch.tensor([0.1, 0.7]))
        search.bank.alpha["layer4_1_act"].copy_(torch.tensor([0.0, -1.0, 2.0]))
    sample = search.argmax_sample()
    assert sample["layer4_1_kernel"] == "k5" and sample["layer4_1_act"] == "mish"
    spec = search.model.to_spec(sample)
    assert spec.stages[3].blocks[1].kernel_size == 5 and spec.stages[3].blocks[1].activation == "mish"


def test_expected_flops_gradient_reaches_alpha_and_prefers_cheaper_kernels():
    search = tiny_search()
    expected_gflops(search.bank, search.candidate_flops).backward()
    grad = search.bank.alpha["layer4_0_kernel"].grad
    assert grad[0] < 0 < grad[1]  # raising the 5x5 logit raises expected FLOPs
    assert search.bank.alpha["layer4_0_act"].grad.abs().max() == 0  # activations cost no FLOPs here
    # With a penalty, an architecture step moves probability towards 3x3.
    penalised = tiny_search(flops_penalty=1e4, arch_lr=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    before = penalised.gate_probabilities()["layer4_0_kernel"][0]
    penalised.arch_step(x, y)
    assert penalised.gate_probabilities()["layer4_0_kernel"][0] > before


def test_expected_flops_of_a_decided_supernet_equals_the_chosen_network():
    from search_spaces import measure_cost

    search = tiny_search()
    with torch.no_grad():
        for label, alpha in search.bank.alpha.items():
            alpha.copy_(torch.tensor([50.0] + [0.0] * (len(alpha) - 1)))  # all mass on the first candidate
    spec = search.model.to_spec(search.argmax_sample())
    flops = measure_cost(spec, input_size=(3, 16, 16)).flops
    assert float(expected_gflops(search.bank, search.candidate_flops).detach()) * 1e9 == pytest.approx(flops, rel=1e-6)


def batches(n, size=4):
    generator = torch.Generator().manual_seed(n)
    return [(torch.randn(size, 3, 16, 16, generator=generator), torch.randint(0, 10, (size,), generator=generator)) for _ in range(n)]


def test_architecture_updates_every_kth_step():
    search = tiny_search(arch_update_every=2)
    calls = []
    original = search.arch_step
    search.arch_step = lambda *args: calls.append(1) or original(*args)
    search.run_epoch(batches(5), batches(2))
    assert len(calls) == 2  # after weight steps 2 and 4


def test_search_epoch_reports_and_checkpoint_resumes(tmp_path):
    search = tiny_search()
    metrics = search.run_epoch(batches(3), batches(2))
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["expected_gflops"] > 0
    search.save(tmp_path / "supernet.ckpt", extra={"epoch": 1})
    restored = tiny_search()
    assert restored.load(tmp_path / "supernet.ckpt") == {"epoch": 1}
    assert restored.gate_probabilities() == search.gate_probabilities()
    assert (restored.epoch, restored.step) == (1, 3)
    for a, b in zip(restored.model.parameters(), search.model.parameters()):
        assert torch.equal(a, b)


def test_corrupt_supernet_checkpoint_is_one_clear_error(tmp_path):
    from trainers.checkpoint import CheckpointError

    path = tmp_path / "supernet.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable resnas checkpoint"):
        tiny_search().load(path)


def test_a_model_checkpoint_is_refused_as_a_supernet_checkpoint(tmp_path):
    from trainers.checkpoint import CheckpointError, save_checkpoint

    save_checkpoint(tmp_path / "model.ckpt", build_model(resnet_spec(18, num_classes=10)))
    with pytest.raises(CheckpointError, match="is a resnas model checkpoint, not a supernet one"):
        tiny_search().load(tmp_path / "model.ckpt")


def test_the_search_config_takes_every_shared_setting_seed_included(tmp_path):
    table = tmp_path / "latency.json"
    LatencyTable(DeviceSettings("cpu", "any")).save(table)
    changed = dict(lr=0.01, momentum=0.8, weight_decay=1e-4, arch_lr=2e-3, arch_weight_decay=1e-3,
                   arch_update_every=2, gradient_estimator="full", flops_penalty=0.1, seed=7,
                   precision="bf16-mixed", channels_last=True, latency_table=str(table), latency_target_ms=20.0,
                   latency_loss="add#linear", latency_alpha=0.3, latency_beta=0.4, latency_lambda=0.2)
    settings = parse_settings(ProxylessSettings, {**changed, "search_epochs": 9}, "test")
    config = ProxylessSearchConfig.from_settings(settings, (3, 16, 16))
    shared = {field.name for field in fields(ProxylessSearchConfig) if hasattr(settings, field.name)}
    assert shared == set(changed)  # a new shared field must be added to `changed` to be checked
    for name, value in changed.items():
        assert getattr(config, name) == value != getattr(ProxylessSearchConfig(), name), name
    assert (config.total_epochs, config.input_size) == (9, (3, 16, 16))


def test_two_seeds_sample_different_paths():
    def paths(seed):
        search = tiny_search(seed=seed)
        drawn = []
        for _ in range(8):
            search.bank.resample("weight", search.generator)
            drawn.append(dict(search.bank.active))
        return drawn

    assert paths(0) == paths(0)
    assert paths(0) != paths(1)


def test_two_path_update_leaves_the_unsampled_candidates_probability_unchanged():
    search = tiny_search(arch_lr=0.5)
    with torch.no_grad():
        search.bank.alpha["layer4_0_act"].copy_(torch.tensor([0.3, -0.2, 0.5]))
    before = search.gate_probabilities()["layer4_0_act"]
    search.arch_step(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    evaluated = search.bank.evaluated["layer4_0_act"]
    (unsampled,) = set(range(3)) - set(evaluated)
    after = search.gate_probabilities()["layer4_0_act"]
    assert after[unsampled] == pytest.approx(before[unsampled], abs=1e-6)
    assert after != pytest.approx(before, abs=1e-6)  # the sampled pair did move


def test_two_path_keeps_every_unsampled_probability_over_many_arch_steps():
    """With the default Adam (beta1 = 0, the official ProxylessNAS) an unsampled candidate's gradient is zero
    and so is its update; with momentum it would keep moving on old gradients after the first step."""
    search = tiny_search(arch_lr=0.05)  # the default betas are under test; a visible lr makes drift show
    three_way = [label for label, alpha in search.bank.alpha.items() if len(alpha) > 2]
    assert three_way  # every block's activation choice
    for images, labels in batches(8):
        before = {label: torch.softmax(search.bank.alpha[label].detach().double(), 0) for label in three_way}
        search.arch_step(images, labels)
        for label in three_way:
            after = torch.softmax(search.bank.alpha[label].detach().double(), 0)
            for index in set(range(len(after))) - set(search.bank.evaluated[label]):
                assert abs(float(after[index] - before[label][index])) < 1e-7, (label, index)


class FreshBatches:
    """A loader that makes new tensors on every pass (as a DataLoader does) and keeps weak references to
    them, so a test can count how many are still alive."""

    def __init__(self, n: int, size: int = 2):
        self.n, self.size = n, size
        self.made: list = []

    def __iter__(self):
        import weakref

        for _ in range(self.n):
            images, labels = torch.randn(self.size, 3, 16, 16), torch.randint(0, 10, (self.size,))
            self.made.append(weakref.ref(images))
            yield images, labels

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.made)


@pytest.mark.parametrize("val_batches", [4, 16])
def test_architecture_steps_keep_no_validation_batch_alive(val_batches):
    """Memory must not grow with the validation split: itertools.cycle kept every batch of the first pass
    (16 alive here), re-iterating the loader keeps only the current one."""
    search = tiny_search()
    val_loader = FreshBatches(val_batches)
    most_alive = []
    original = search.arch_step

    def counting_arch_step(*batch):
        loss = original(*batch)
        most_alive.append(val_loader.alive())  # the step's own batch is gone once it returns
        return loss

    search.arch_step = counting_arch_step
    for _ in range(2):  # two epochs of 20 arch steps: more than one pass over either loader
        search.run_epoch(batches(20, size=2), val_loader, limit_val_batches=1)
    assert len(most_alive) == 40 and max(most_alive) <= 1, most_alive


def test_an_empty_validation_loader_is_one_clear_error():
    with pytest.raises(ValueError, match="raise val_fraction"):
        tiny_search().run_epoch(batches(2), [])


def test_scoped_resnet50_candidates_are_the_scopes_definition():
    from search_spaces.scopes import ACTIVATION_CANDIDATES, KERNEL_CANDIDATES

    space = ScopedResNet50("s", width_multiplier=1 / 16, stem="cifar")
    assert (space.kernels, space.activations) == (KERNEL_CANDIDATES, ACTIVATION_CANDIDATES)
    assert (KERNEL_CANDIDATES, ACTIVATION_CANDIDATES) == ((3, 5), ("relu", "leaky_relu", "mish"))  # the paper's


@pytest.mark.parametrize(
    "stem,image_size", [("imagenet", 224), ("imagenet", 129), ("imagenet", 32), ("cifar", 33), ("cifar", 16)]
)
def test_map_sizes_of_the_settings_check_are_the_networks(stem, image_size):
    """The torch-free arithmetic of search_spaces.scopes against the real ResNet-50: the side of the map each
    middle conv (the searched kernel) slides over."""
    from search_spaces.scopes import searched_kernel_maps

    model = build_model(resnet_spec(50, num_classes=10, stem=stem, width_multiplier=1 / 16))
    seen = {}
    for stage, block, _ in searched_kernel_maps("f", stem, image_size):
        conv = model.get_submodule(f"layer{stage}.{block}.conv2")
        conv.register_forward_hook(
            lambda module, inputs, output, key=(stage, block): seen.__setitem__(key, inputs[0].shape[-1])
        )
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    assert {(stage, block): side for stage, block, side in searched_kernel_maps("f", stem, image_size)} == seen
    if (stem, image_size) == ("imagenet", 224):
        assert [seen[(stage, 1)] for stage in (1, 2, 3, 4)] == [56, 28, 14, 7]
