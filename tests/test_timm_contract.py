"""timm's model contract, held by one exported network of each search method, loaded back through timm.

Where a search result goes next: timm's train.py (layer-wise decay, gradient checkpointing), detection and
segmentation backbones (features_only, forward_intermediates, prune_intermediate_layers), TorchScript,
torch.export and ONNX Runtime. Each test states one clause of that contract and checks it on the folder
`export_to_timm` wrote, as a user's `timm.create_model('local-dir:...', pretrained=True)` sees it.
"""

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.optim
import timm.scheduler
import torch
from torch.nn import functional as F

from search_spaces import (
    ArchSpec,
    ResNasNet,
    build_model,
    export_to_timm,
    nash_start_spec,
    plain_timm_resnet,
    resbuilder_start_spec,
)
from search_spaces.choices import ScopeChoices
from search_spaces.edits.morphism_ops import Morphism
from search_spaces.edits.morphisms import apply_morphisms
from search_spaces.edits.resbuilder import insert_random_block
from search_spaces.spec import cifar_resnet_spec

SIZE = 16  # pixels (32 for the ImageNet stem): every feature map is still >= 1x1, and a forward costs milliseconds
TOLERANCE = 1e-5  # TorchScript, torch.export and checkpointing against eager
ONNX_TOLERANCE = 1e-4  # onnxruntime fuses conv + BN in float32


# ---- one network of each method's space ------------------------------------------------------------------
def scoped_resnet50() -> tuple[ArchSpec, dict]:
    """Search-scope ProxylessNAS: ResNet-50 (x0.125) with every bottleneck's choice made, cycling through k3/k5
    and ReLU/LeakyReLU/Mish so every candidate appears. The paper's ImageNet stem: the one net here whose stem
    max-pools, so feature 0 must be tapped before the pool (the other three have CIFAR stems)."""
    choices = ScopeChoices.resnet50("f", num_classes=10, stem="imagenet", width_multiplier=0.125)
    labels = choices.choice_labels()  # kernel, then activation, per searched block
    sample = {}
    for block, ((kernel_label, kernels), (act_label, acts)) in enumerate(zip(labels[::2], labels[1::2])):
        sample[kernel_label], sample[act_label] = kernels[block % len(kernels)], acts[block % len(acts)]
    spec = choices.to_spec(sample)
    return spec, build_model(spec).state_dict()


def nash_morphed() -> tuple[ArchSpec, dict]:
    """NASH: the start net after a widen, a residual deepening and a kernel enlargement (function-preserving)."""
    start = nash_start_spec(num_classes=10, widths=(8, 16, 32))
    morphisms = [
        Morphism("widen", 1, 0, new_width=24, seed=1),
        Morphism("deepen_residual", 1, 1, seed=2),
        Morphism("enlarge_kernel", 2, 0, seed=3),
    ]
    return apply_morphisms(start, build_model(start).state_dict(), morphisms)


def resbuilder_grown() -> tuple[ArchSpec, dict]:
    """ResBuilder: RB-0Net with three near-identity blocks inserted at random places."""
    spec = resbuilder_start_spec(num_classes=10, width=8)
    state, rng = build_model(spec).state_dict(), random.Random(0)
    for _ in range(3):
        spec, state, _ = insert_random_block(spec, state, rng)
    return spec, state


def stagewise_cifar() -> tuple[ArchSpec, dict]:
    """Stage-wise depth: a CIFAR ResNet with uneven stage depths."""
    spec = cifar_resnet_spec(stage_depths=(1, 2, 1), widths=(8, 16, 32))
    return spec, build_model(spec).state_dict()


NETWORKS = {"scoped": scoped_resnet50, "nash": nash_morphed, "resbuilder": resbuilder_grown,
            "stagewise": stagewise_cifar}


@dataclass(frozen=True)
class Export:
    spec: ArchSpec
    folder: Path
    size: int  # the export's input_size is (3, size, size)
    logits: torch.Tensor  # the searched network's eval logits on `inputs`, before export
    inputs: torch.Tensor

    def load(self, **kwargs) -> torch.nn.Module:
        return timm.create_model(f"local-dir:{self.folder}", pretrained=True, **kwargs)


def trained_looking(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BN scales, shifts and statistics (zero-init or unit BN would hide a wrong mapping or a skipped
    layer) that keep feature maps O(1), and a head 10x sharper than at init: logits of a few units, as trained."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, scale, offset in ((module.weight, 0.5, 0.5), (module.bias, 0.2, -0.1),
                                              (module.running_mean, 0.2, -0.1), (module.running_var, 1.0, 0.5)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * scale + offset)
        model.fc.weight.mul_(10.0)
    return model.eval()


@pytest.fixture(scope="module", params=list(NETWORKS))
def export(request, tmp_path_factory) -> Export:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # build_model draws from the global RNG
    try:
        spec, state = NETWORKS[request.param]()
        model = build_model(spec)
        model.load_state_dict(state, strict=True)
        model = trained_looking(model, seed=1)
        size = 2 * SIZE if spec.stem.max_pool else SIZE
        inputs = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            logits = model(inputs)
        folder = export_to_timm(spec, model, tmp_path_factory.mktemp(request.param) / "export",
                                input_size=(3, size, size))
    finally:
        torch.set_num_threads(threads)
    return Export(spec, folder, size, logits, inputs)


def stage_count(export: Export) -> int:
    return len(export.spec.stages)


def test_each_network_is_what_its_method_searches():
    """The contract is checked on the shapes the searches produce, none of which timm's own ResNet builds."""
    specs = {name: make()[0] for name, make in NETWORKS.items()}
    blocks = {name: [block for _, _, block in spec.iter_blocks()] for name, spec in specs.items()}
    assert {block.kernel_size for block in blocks["scoped"]} == {3, 5}
    assert {block.activation for block in blocks["scoped"]} == {"relu", "leaky_relu", "mish"}
    assert [block.kind for block in blocks["nash"]] == ["conv", "basic", "conv"]
    assert blocks["nash"][0].widths == (24,) and blocks["nash"][2].kernel_size == 5
    assert [block.kind for block in blocks["resbuilder"]] == ["resbuilder"] * 3
    assert [stage.pool for stage in specs["resbuilder"].stages] == ["max", "max"]
    assert specs["stagewise"].depths == (1, 2, 1)
    assert not any(plain_timm_resnet(spec) for spec in specs.values())


# ---- forward, backward, features -------------------------------------------------------------------------
def test_forward_and_backward_at_the_exports_input_size(export, one_thread_and_seeded):
    model = export.load().eval()
    assert isinstance(model, ResNasNet) and model.pretrained_cfg["input_size"] == (3, export.size, export.size)
    config = timm.data.resolve_data_config(model=model)
    assert config["input_size"] == (3, export.size, export.size)
    with torch.no_grad():
        assert (model(export.inputs) - export.logits).abs().max() <= TOLERANCE
    model.train()
    model(torch.randn(4, *config["input_size"])).logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.head_hidden_size == model.num_features == export.spec.num_features
    assert model.forward_head(model.forward_features(export.inputs), pre_logits=True).shape[1] == model.head_hidden_size
    assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"


def test_pool_size_is_the_size_of_the_feature_maps_at_the_cfgs_input_size(export, one_thread_and_seeded):
    """timm's cfg contract (its test_model_default_cfgs): forward_features' H and W at the cfg's input size, from
    the export's config.json, and worked out for a fresh `resnas_net` at the default 224 px."""
    exported = export.load().eval()
    fresh = timm.create_model("resnas_net", arch_spec=export.spec.to_dict()).eval()
    for model in (exported, fresh):
        size = model.pretrained_cfg["input_size"]
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, *size))
        assert tuple(model.pretrained_cfg["pool_size"]) == tuple(features.shape[-2:])
    assert fresh.pretrained_cfg["input_size"] == (3, 224, 224)


def test_intermediates_equal_features_only_the_getter_and_hooks_on_each_stage(export, one_thread_and_seeded):
    model = export.load().eval()
    taps = ["act1"] + [f"layer{index}" for index in range(1, stage_count(export) + 1)]
    assert [info["module"] for info in model.feature_info] == taps
    hooked = []
    for name in taps:
        model.get_submodule(name).register_forward_hook(lambda module, args, output: hooked.append(output.clone()))
    wrappers = [export.load(features_only=True).eval(), export.load(features_only=True, feature_cls="getter").eval()]
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(export.inputs)
        seen_by_hooks = list(hooked)
        assert torch.equal(final, model.forward_features(export.inputs))
        for wrapper in wrappers:
            assert wrapper.feature_info.channels() == [info["num_chs"] for info in model.feature_info]
            for theirs, ours, hook in zip(wrapper(export.inputs), intermediates, seen_by_hooks, strict=True):
                assert torch.equal(theirs, ours) and torch.equal(ours, hook)
    for info, feature in zip(model.feature_info, intermediates):
        side = export.size // info["reduction"]
        assert feature.shape[1:] == (info["num_chs"], side, side)


def test_intermediates_only_stop_early_and_index_forms(export, one_thread_and_seeded):
    model = export.load().eval()
    count = stage_count(export) + 1
    with torch.no_grad():
        _, everything = model.forward_intermediates(export.inputs)
        last_two = model.forward_intermediates(export.inputs, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(export.inputs, indices=[0, -1], intermediates_only=True)
        final, early = model.forward_intermediates(export.inputs, indices=[1], stop_early=True)
    assert isinstance(last_two, list) and [torch.equal(a, b) for a, b in zip(last_two, everything[-2:])] == [True] * 2
    assert torch.equal(picked[0], everything[0]) and torch.equal(picked[1], everything[count - 1])
    assert len(early) == 1 and torch.equal(early[0], everything[1]) and torch.equal(final, everything[1])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(export.inputs, output_fmt="NHWC")


@pytest.mark.parametrize("indices", [[0], [0, 1]], ids=["stem", "stem+layer1"])
def test_pruned_network_keeps_the_intermediates_it_was_pruned_for(export, indices, one_thread_and_seeded):
    reference = export.load().eval()
    pruned = export.load().eval()
    assert pruned.prune_intermediate_layers(indices=indices) == indices
    last = indices[-1]
    later_stages = [f"layer{index}" for index in range(last + 1, stage_count(export) + 1)]
    assert all(len(pruned.get_submodule(name)) == 0 for name in later_stages)
    assert not any(name.startswith(("fc.", *later_stages)) for name, _ in pruned.named_parameters())
    assert pruned.num_features == pruned.head_hidden_size == pruned.feature_info[last]["num_chs"]
    with torch.no_grad():
        _, expected = reference.forward_intermediates(export.inputs, indices=indices)
        final, kept = pruned.forward_intermediates(export.inputs, indices=indices)
        assert all(torch.equal(a, b) for a, b in zip(kept, expected, strict=True))
        assert torch.equal(pruned(export.inputs), expected[-1])  # head gone: forward is the unpooled last map
        assert torch.equal(final, expected[-1])


# ---- deployment: TorchScript, torch.export, ONNX ----------------------------------------------------------
@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_torchscript_and_torch_export_equal_eager(export, one_thread_and_seeded):
    with timm.layers.set_layer_config(scriptable=True, exportable=True):
        model = export.load().eval()
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)  # a deployment artefact, not only an in-process module
    reloaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    other_batch = torch.randn(3, 3, export.size, export.size)
    batch = torch.export.Dim("batch", min=2, max=64)
    exported = torch.export.export(model, (export.inputs,), dynamic_shapes=({0: batch},)).module()
    with torch.no_grad():
        for x in (export.inputs, other_batch):
            eager = model(x)
            for program in (scripted, reloaded, exported):
                assert (program(x) - eager).abs().max() <= TOLERANCE


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter announces its successor
def test_onnx_export_runs_in_onnxruntime(export, one_thread_and_seeded, tmp_path):
    onnx = pytest.importorskip("onnx", reason="pip install -e '.[test]' installs onnx")
    onnxruntime = pytest.importorskip("onnxruntime", reason="pip install -e '.[test]' installs onnxruntime")
    model = export.load().eval()
    path = tmp_path / "model.onnx"
    # The dynamo exporter needs onnxscript, which resnas does not install; the TorchScript-based one does not.
    torch.onnx.export(model, (export.inputs,), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(str(path), full_check=True)  # valid by the ONNX spec, shapes inferred
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for x in (export.inputs, torch.randn(5, 3, export.size, export.size)):
        (logits,) = session.run(["logits"], {"image": x.numpy()})
        with torch.no_grad():
            assert np.abs(logits - model(x).numpy()).max() <= ONNX_TOLERANCE


# ---- training: checkpointing, parameter groups ------------------------------------------------------------
def loss_and_gradients(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor):
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(export, one_thread_and_seeded, monkeypatch):
    x, target = torch.randn(4, 3, export.size, export.size), torch.tensor([0, 1, 2, 3])
    plain, checkpointed = export.load().train(), export.load().train()
    checkpointed.set_grad_checkpointing(True)
    segments = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counted_checkpoint(function, *args, **kwargs):
        segments.append(function)
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted_checkpoint)
    expected_loss, expected = loss_and_gradients(plain, x, target)
    loss, gradients = loss_and_gradients(checkpointed, x, target)
    # one segment per block and per pooling layer of a stage, as timm's ResNet checkpoints
    assert len(segments) == sum(len(checkpointed.get_submodule(name)) for name in checkpointed.stage_names) > 0
    assert (loss - expected_loss).abs() <= TOLERANCE
    assert gradients.keys() == expected.keys()
    assert all((gradients[name] - expected[name]).abs().max() <= TOLERANCE for name in expected)
    # Still in train mode (batch statistics) on purpose: the recomputation in backward updated the checkpointed
    # net's running statistics a second time (as in timm), so eval-mode outputs would differ.
    _, with_checkpoints = checkpointed.forward_intermediates(x)
    _, without = plain.forward_intermediates(x)
    assert all((a - b).abs().max() <= TOLERANCE for a, b in zip(with_checkpoints, without, strict=True))


@pytest.mark.parametrize("coarse", [True, False], ids=["stages", "blocks"])
def test_group_matcher_puts_every_parameter_in_exactly_one_group_in_forward_order(export, coarse):
    model = export.load()
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=coarse))
    grouped = [name for _, names in sorted(groups.items()) for name in names]
    names = [name for name, _ in model.named_parameters()]
    assert sorted(grouped) == sorted(names) and len(grouped) == len(set(grouped))
    assert grouped == names  # group order is forward order: layer-wise decay shrinks the lr towards the stem
    assert groups[0] == ["conv1.weight", "bn1.weight", "bn1.bias"] and groups[max(groups)] == ["fc.weight", "fc.bias"]
    depth = 1 if coarse else 2  # "layer3" or "layer3.1"
    units = {".".join(name.split(".")[:depth]) for name in names if name.startswith("layer")}
    assert len(groups) == len(units) + 2  # stem + one group per stage (or block) holding weights + head


# ---- done when: a timm-style fine-tune of an export -------------------------------------------------------
def digits(image_size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits as 3-channel images at the export's size, normalised by its config."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    images = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return images, torch.tensor(data.target)


@pytest.mark.parametrize("export", ["stagewise"], indirect=True)
def test_fine_tune_with_layer_decay_and_checkpointing_runs_an_epoch_on_digits(export, one_thread_and_seeded):
    model = export.load(num_classes=10).train()
    model.set_grad_checkpointing(True)
    config = timm.data.resolve_data_config(model=model)
    images, labels = digits(config["input_size"][-1], config["mean"], config["std"])
    lr, decay = 0.2, 0.7
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=lr, momentum=0.9, weight_decay=1e-4,
                                               layer_decay=decay)
    timm.scheduler.create_scheduler_v2(optimizer, sched="cosine", num_epochs=1)  # applies each group's lr_scale
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    layers = timm.models.group_parameters(model, model.group_matcher())
    assert len(rates) == len(layers) and rates[-1] == pytest.approx(lr)  # one rate per layer, the head's = lr
    assert rates[0] == pytest.approx(lr * decay ** (len(layers) - 1))  # the stem's
    order = torch.randperm(len(labels))
    losses = []
    for batch in order.split(64):
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert len(losses) == 29 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])  # it learns (0.21 here)
