"""Stage importance (PLS + VIP, inf-FS): the formulas against hand computations, their identities, the
degenerate inputs a trained net produces (dead channels, duplicated channels), and a torch-free import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cross_decomposition import PLSRegression

from strategies.stagewise.importance import (
    CRITERIA,
    inf_fs_scores,
    one_hot,
    stage_importance,
    vip_scores,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# 8 samples x 3 features and 3 classes, fixed so the hand computation below is reproducible by anyone.
SMALL_FEATURES = np.array(
    [
        [0.2, 1.5, -0.3],
        [1.1, 0.4, 0.8],
        [-0.7, 2.2, 0.1],
        [0.9, -0.6, 1.9],
        [1.8, 0.3, -1.2],
        [-1.3, 1.0, 0.6],
        [0.5, -1.4, 0.0],
        [2.4, 0.7, 1.1],
    ]
)
SMALL_LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 1])


def reference_vip(pls: PLSRegression) -> np.ndarray:
    """VIP written out term by term from a fitted PLSRegression, independently of the module."""
    weights, scores, target_loadings = pls.x_weights_, pls.x_scores_, pls.y_loadings_
    n_features, n_components = weights.shape
    explained = [
        float(scores[:, h] @ scores[:, h]) * float(target_loadings[:, h] @ target_loadings[:, h])
        for h in range(n_components)
    ]
    vip = np.empty(n_features)
    for j in range(n_features):
        weighted = sum(explained[h] * (weights[j, h] / np.linalg.norm(weights[:, h])) ** 2 for h in range(n_components))
        vip[j] = np.sqrt(n_features * weighted / sum(explained))
    return vip


def assert_one_sentence(message: str) -> None:
    assert re.fullmatch(r"[A-Z][^\n]*\.", message), message
    assert not re.search(r"[.!?]\s", message), message


def labelled_noise(seed: int, n_samples: int, n_classes: int = 3) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_samples) % n_classes)  # every class present
    return labels, rng


def test_vip_matches_the_formula_computed_by_hand():
    targets = one_hot(SMALL_LABELS)
    pls = PLSRegression(n_components=2, scale=True).fit(SMALL_FEATURES, targets)
    vip = vip_scores(SMALL_FEATURES, targets, n_components=2)

    np.testing.assert_allclose(vip, reference_vip(pls), rtol=0, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_samples=st.integers(3, 40),
    n_live=st.integers(1, 10),
    n_dead=st.integers(0, 2),
    n_classes=st.integers(2, 4),
    n_components=st.integers(1, 3),
)
def test_squared_vips_sum_to_the_feature_count(seed, n_samples, n_live, n_dead, n_classes, n_components):
    labels, rng = labelled_noise(seed, n_samples, n_classes)
    features = np.hstack([rng.normal(size=(n_samples, n_live)), np.zeros((n_samples, n_dead))])
    n_features = n_live + n_dead
    n_components = min(n_components, n_samples - 1, n_features)

    vip = vip_scores(features, one_hot(labels), n_components)

    assert vip.shape == (n_features,)
    assert abs(np.sum(vip**2) - n_features) < 1e-8
    assert np.mean(vip) <= 1 + 1e-12


def test_an_informative_feature_outranks_noise():
    labels, rng = labelled_noise(seed=0, n_samples=120)
    informative = labels + 0.5 * rng.normal(size=120)
    features = np.column_stack([informative, rng.normal(size=(120, 5))])

    vip = vip_scores(features, one_hot(labels))

    assert vip[0] > 1.5 * vip[1:].max()


def test_an_informative_stage_outscores_a_stage_of_noise():
    labels, rng = labelled_noise(seed=0, n_samples=120)
    informative_stage = labels[:, None] + 0.7 * rng.normal(size=(120, 8))
    noise_stage = rng.normal(size=(120, 8))

    informative_score, noise_score = stage_importance([informative_stage, noise_stage], labels)

    assert informative_score > noise_score + 0.05
    assert informative_score <= 1


def test_each_stage_gets_its_own_pls_fit():
    labels, rng = labelled_noise(seed=1, n_samples=60)
    first, second = rng.normal(size=(60, 4)), labels[:, None] + rng.normal(size=(60, 6))

    scores = stage_importance([first, second], labels)

    targets = one_hot(labels)
    assert scores == [float(np.mean(vip_scores(first, targets))), float(np.mean(vip_scores(second, targets)))]
    assert stage_importance([first], labels) == scores[:1]  # the other stage does not move it


def test_inf_fs_criterion_is_the_mean_inf_fs_score_and_ignores_labels():
    labels, rng = labelled_noise(seed=2, n_samples=40)
    stage = rng.normal(size=(40, 5))

    scores = stage_importance([stage], labels, criterion="inf_fs")

    assert scores == [float(np.mean(inf_fs_scores(stage)))]
    assert stage_importance([stage], np.zeros(40, dtype=int), criterion="inf_fs") == scores
    assert CRITERIA == ("pls", "inf_fs")


def test_constant_features_get_vip_zero_and_leave_the_others_as_the_authors_fit_gives_them():
    labels, rng = labelled_noise(seed=3, n_samples=30)
    targets = one_hot(labels)
    live = rng.normal(size=(30, 4))
    with_dead_zero = np.column_stack([live[:, :2], np.zeros(30), live[:, 2:]])
    # 0.1 repeated has a mean of 0.1 + 1e-17, so a standardising fit would divide by a ~1e-17 std
    with_dead_tenth = np.column_stack([live[:, :2], np.full(30, 0.1), live[:, 2:]])

    vip = vip_scores(with_dead_zero, targets)

    assert vip[2] == 0
    # sklearn's own guard handles an exact-zero std: the authors' fit on all columns
    authors = reference_vip(PLSRegression(n_components=2).fit(with_dead_zero, targets))
    np.testing.assert_allclose(vip, authors, rtol=0, atol=1e-10)
    np.testing.assert_allclose(vip_scores(with_dead_tenth, targets), vip, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(vip_scores(np.ones((30, 3)), targets), np.zeros(3))


def test_components_past_the_rank_of_the_features_are_left_out():
    labels, rng = labelled_noise(seed=4, n_samples=40)
    channel = rng.normal(size=(40, 1))
    duplicated = np.hstack([channel, 2 * channel, -channel])  # rank 1
    targets = one_hot(labels)

    vip = vip_scores(duplicated, targets, n_components=3)

    np.testing.assert_allclose(vip, vip_scores(duplicated, targets, n_components=1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(vip, np.ones(3), rtol=0, atol=1e-10)


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0, 1])), np.eye(3)[[2, 0, 1]])
    assert one_hot(np.array([0, 1]), num_classes=4).shape == (2, 4)


BAD_CALLS = {
    "features not 2-D": lambda: vip_scores(np.ones(5), np.ones(5)),
    "one sample": lambda: vip_scores(np.ones((1, 3)), np.ones((1, 2))),
    "too many components": lambda: vip_scores(SMALL_FEATURES, one_hot(SMALL_LABELS), n_components=4),
    "no component": lambda: vip_scores(SMALL_FEATURES, one_hot(SMALL_LABELS), n_components=0),
    "rows differ": lambda: vip_scores(SMALL_FEATURES, one_hot(SMALL_LABELS)[:5]),
    "nan feature": lambda: vip_scores(np.where(SMALL_FEATURES > 2, np.nan, SMALL_FEATURES), one_hot(SMALL_LABELS)),
    "infinite target": lambda: vip_scores(SMALL_FEATURES, np.where(one_hot(SMALL_LABELS) > 0, np.inf, 0)),
    "one class": lambda: vip_scores(SMALL_FEATURES, np.ones((8, 1))),
    "float labels": lambda: one_hot(np.array([0.0, 1.0])),
    "negative label": lambda: one_hot(np.array([0, -1])),
    "label past num_classes": lambda: one_hot(np.array([0, 3]), num_classes=3),
    "inf-FS one sample": lambda: inf_fs_scores(np.ones((1, 3))),
    "inf-FS alpha": lambda: inf_fs_scores(SMALL_FEATURES, alpha=1.5),
    "no stage": lambda: stage_importance([], SMALL_LABELS),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_raises_one_sentence(call):
    with pytest.raises(ValueError) as raised:
        call()
    assert_one_sentence(str(raised.value))


def test_unknown_criterion_names_the_valid_ones():
    with pytest.raises(ValueError, match="pls, inf_fs") as raised:
        stage_importance([SMALL_FEATURES], SMALL_LABELS, criterion="vip")
    assert_one_sentence(str(raised.value))


def test_inf_fs_scores_are_finite_per_feature():
    rng = np.random.default_rng(5)
    features = np.column_stack([rng.normal(size=(30, 6)), np.zeros(30)])  # with a dead channel

    scores = inf_fs_scores(features)

    assert scores.shape == (7,)
    assert np.all(np.isfinite(scores))


def test_inf_fs_matches_a_graph_built_by_hand():
    # Spearman: rho_01 = -1, rho_02 = 0.8, rho_12 = -0.8; stds s, s, 10 s -> normalised sigma = 0, 0, 1
    features = np.array([[1, 4, 10], [2, 3, 30], [3, 2, 20], [4, 1, 40]], dtype=float)
    # alpha = 0.5: A_ij = 0.5 * max(sigma_i, sigma_j) + 0.5 * (1 - |rho_ij|)
    graph = np.array([[0.0, 0.0, 0.6], [0.0, 0.0, 0.6], [0.6, 0.6, 0.5]])
    spectral_radius = (0.5 + np.sqrt(0.5**2 + 8 * 0.6**2)) / 2  # of [[0, a], [2a, b]] on span{(1,1,0), (0,0,1)}
    decay = 0.9 / spectral_radius
    expected = (np.linalg.inv(np.eye(3) - decay * graph) - np.eye(3)).sum(axis=1)

    np.testing.assert_allclose(inf_fs_scores(features, alpha=0.5), expected, rtol=1e-12)


def test_inf_fs_duplicated_features_are_redundant():
    base, other = np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 1, 3])  # Spearman(base, other) = 0
    # alpha = 0: A = 1 - |rho| = [[0, 0, 1], [0, 0, 1], [1, 1, 0]], rho(A) = sqrt(2); solving
    # (I - rA) x = 1 by symmetry gives x = ((1 + r), (1 + r), (1 + 2r)) / (1 - 2 r^2)
    decay = 0.9 / np.sqrt(2)
    pair_score = (1 + decay) / (1 - 2 * decay**2) - 1
    other_score = (1 + 2 * decay) / (1 - 2 * decay**2) - 1

    scores = inf_fs_scores(np.column_stack([base, base, other]), alpha=0)

    np.testing.assert_allclose(scores, [pair_score, pair_score, other_score], rtol=1e-12)
    assert other_score > pair_score


def test_inf_fs_a_copy_scores_the_same_as_its_original():
    rng = np.random.default_rng(6)
    features = rng.normal(size=(25, 4))
    scores = inf_fs_scores(np.column_stack([features, features[:, 1]]))  # column 4 copies column 1: equal rows of A

    assert scores[4] == pytest.approx(scores[1], rel=1e-12)


def test_import_does_not_load_torch():
    code = "import strategies.stagewise.importance, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)
