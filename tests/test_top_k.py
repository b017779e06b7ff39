"""Top-k architectures of independent gates: best first without the product space, argmax first, exact products,
deterministic ties; and one path's weights picked out of a supernet's state dict by name."""

import itertools
import math
import random

import pytest

from strategies.proxyless.top_k import path_state_dict, top_k_architectures


def brute_force(probabilities):
    """Every architecture with its product, most probable first (the reference for small spaces)."""
    labels = list(probabilities)
    rows = []
    for values in itertools.product(*(probabilities[label] for label in labels)):
        rows.append((math.prod(probabilities[label][value] for label, value in zip(labels, values)),
                     dict(zip(labels, values))))
    return sorted(rows, key=lambda row: -row[0])


def random_gates(seed, labels=4):
    generator = random.Random(seed)
    gates = {}
    for label in range(labels):
        weights = [generator.random() + 1e-3 for _ in range(generator.choice((2, 3)))]
        gates[f"layer4_{label}_choice"] = {f"c{i}": w / sum(weights) for i, w in enumerate(weights)}
    return gates


@pytest.mark.parametrize("seed", range(5))
def test_products_and_order_match_the_brute_force_ranking(seed):
    gates = random_gates(seed)
    expected = brute_force(gates)
    found = top_k_architectures(gates, 7)
    assert [entry.rank for entry in found] == list(range(1, 8))
    assert [entry.probability for entry in found] == pytest.approx([p for p, _ in expected[:7]], rel=1e-12)
    for entry in found:
        product = math.prod(gates[label][value] for label, value in entry.sample.items())
        assert entry.probability == pytest.approx(product)
        assert entry.log_probability == pytest.approx(math.log(entry.probability))
    assert len({tuple(entry.sample.values()) for entry in found}) == 7  # no architecture twice


def test_the_argmax_comes_first_and_the_labels_keep_their_order():
    gates = {"b_kernel": {"k3": 0.3, "k5": 0.7}, "a_act": {"relu": 0.2, "mish": 0.5, "leaky_relu": 0.3}}
    first = top_k_architectures(gates, 1)
    assert len(first) == 1 and first[0].sample == {"b_kernel": "k5", "a_act": "mish"}
    assert list(first[0].sample) == ["b_kernel", "a_act"] and first[0].probability == pytest.approx(0.35)


def test_k_larger_than_the_space_returns_every_architecture_once():
    gates = {"a": {"x": 0.6, "y": 0.4}, "b": {"p": 0.5, "q": 0.3, "r": 0.2}}
    found = top_k_architectures(gates, 100)
    assert len(found) == 6
    assert sorted(tuple(entry.sample.values()) for entry in found) == sorted(itertools.product("xy", "pqr"))
    assert sum(entry.probability for entry in found) == pytest.approx(1.0)
    assert top_k_architectures({}, 3)[0].sample == {} and len(top_k_architectures({}, 3)) == 1  # nothing to choose


def test_ties_keep_the_given_order():
    # Equal values of one label: the earlier one first (torch's argmax picks it too).
    even = top_k_architectures({"a": {"first": 0.5, "second": 0.5}}, 2)
    assert [entry.sample["a"] for entry in even] == ["first", "second"]
    # Equal products (0.6 * 0.2 == 0.4 * 0.3): the one whose picks come earlier in the per-label order first.
    gates = {"a": {"x": 0.6, "y": 0.4}, "b": {"p": 0.5, "q": 0.3, "r": 0.2}}
    tied = top_k_architectures(gates, 5)[3:5]
    assert [entry.sample for entry in tied] == [{"a": "x", "b": "r"}, {"a": "y", "b": "q"}]
    assert tied[0].log_probability == tied[1].log_probability
    uniform = top_k_architectures({f"l{i}": {"u": 0.5, "v": 0.5} for i in range(3)}, 8)
    assert [tuple(e.sample.values()) for e in uniform] == sorted(itertools.product("uv", repeat=3))


def test_a_large_space_is_enumerated_without_visiting_it():
    # ResNet-50's full scope: 32 labels, 2^16 * 3^16 paths; products underflow nowhere, the logs order them.
    gates = {f"layer{i}_kernel": {"k3": 0.9, "k5": 0.1} for i in range(16)}
    gates.update({f"layer{i}_act": {"relu": 0.5, "leaky_relu": 0.3, "mish": 0.2} for i in range(16)})
    found = top_k_architectures(gates, 50)
    assert len(found) == 50
    assert all(a.log_probability >= b.log_probability for a, b in zip(found, found[1:]))
    assert found[0].probability == pytest.approx(0.9**16 * 0.5**16)


@pytest.mark.parametrize(
    "gates,k,message",
    [({"a": {"x": 1.0}}, 0, "k must be a positive integer"), ({"a": {"x": 1.0}}, 2.0, "positive integer"),
     ({"a": {}}, 1, "label 'a' has no values"), ({"a": {"x": -0.1}}, 1, r"in \[0, 1\]"),
     ({"a": {"x": float("nan")}}, 1, r"in \[0, 1\]")],
)
def test_bad_input_is_refused_naming_the_fix(gates, k, message):
    with pytest.raises(ValueError, match=message):
        top_k_architectures(gates, k)


def test_zero_probability_choices_rank_last():
    found = top_k_architectures({"a": {"never": 0.0, "always": 1.0}}, 2)
    assert [entry.sample["a"] for entry in found] == ["always", "never"] and found[1].probability == 0.0


def test_path_state_dict_keeps_the_chosen_candidate_under_the_gates_name():
    supernet = {"conv1.weight": 1, "layer4.0.conv2.candidates.0.weight": "k3",
                "layer4.0.conv2.candidates.1.weight": "k5", "layer4.0.bn2.weight": 2, "fc.weight": 3}
    gate_labels = {"layer4.0.conv2": "layer4_0_kernel", "layer4.0.act1": "layer4_0_act"}
    candidates = {"layer4_0_kernel": ["k3", "k5"], "layer4_0_act": ["relu", "mish"]}
    path = path_state_dict(supernet, gate_labels, candidates, {"layer4_0_kernel": "k5", "layer4_0_act": "mish"})
    assert path == {"conv1.weight": 1, "layer4.0.conv2.weight": "k5", "layer4.0.bn2.weight": 2, "fc.weight": 3}
    with pytest.raises(ValueError, match="no candidate of layer4_0_kernel"):
        path_state_dict(supernet, gate_labels, candidates, {"layer4_0_kernel": "k7", "layer4_0_act": "mish"})
