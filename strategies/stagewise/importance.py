"""Stage importance for stage-wise depth search (Jordao et al., "Stage-wise neural architecture search").

The tuner grows every stage of the current net by one step (the temporary net), trains both, and keeps the
growth of stage i only where the temporary net's stage-i score beats the current net's. A stage's score is
the mean importance of the features its last block outputs, globally average-pooled: one row per image, one
column per channel. Two criteria from the paper:

- "pls": Variable Importance in Projection (VIP) of a PLS regression from the features to the one-hot labels
  (supervised; the paper's best criterion, Table II).
- "inf_fs": Infinite Feature Selection (Roffo et al., ICCV 2015) of the features alone (unsupervised).

Scores are only ever compared between the same stage of two nets, which has the same width in both: that is
the comparability the method needs, and both criteria have it (same feature count, same normalisation).

Pure numpy, scipy and scikit-learn, no torch: a trial hands its pooled features over as numpy arrays. scipy and
scikit-learn are imported when a score is computed: the tuner's settings read CRITERIA from here, and NNI's
dispatcher must connect within 10 s of its start.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Literal

import numpy as np

Criterion = Literal["pls", "inf_fs"]
CRITERIA: tuple[str, ...] = typing.get_args(Criterion)

# A PLS component whose X scores hold less than this fraction of the first component's sum of squares lies
# past the rank of the features: its weights fit rounding noise (seen: 1e-31), yet its s_h need not be small.
_RANK_TOLERANCE = 1e-12
# r * rho(A) in inf-FS (Roffo et al. 2015): below 1, so the series over path lengths converges.
_PATH_DECAY = 0.9


def vip_scores(features: np.ndarray, targets: np.ndarray, n_components: int = 2) -> np.ndarray:
    """Variable Importance in Projection of each feature column of a PLS regression from features to targets.

    VIP_j = sqrt(p * sum_h s_h (w_jh / ||w_h||)^2 / sum_h s_h), with w the X weights (p x H) and
    s_h = (t_h' t_h) ||q_h||^2 the target variance that component h explains (t: X scores, q: Y loadings).
    Components count by how much of the targets they explain, so a feature is important when it drives the
    components that predict the targets. sum_j VIP_j^2 = p by construction: the mean VIP^2 is 1 and the mean
    VIP is at most 1, reaching 1 only when every feature is equally important.

    The model is sklearn's PLSRegression with scale=True, as in the authors' code: every feature and target
    column is standardised, so a channel's importance does not depend on its activation scale.

    Exactly constant columns (dead ReLU channels after pooling) are dropped before the fit and get VIP 0: they
    explain nothing, and standardising them divides by a zero std (or by a 1e-17 one, from rounding in the
    mean). p stays the full column count, so the VIPs equal those of a fit on all columns behind sklearn's own
    zero-std guard (what the authors' code computed), sum_j VIP_j^2 = p holds over all columns, and dead
    channels lower the mean. Where the varying columns span fewer directions than n_components (too few of
    them vary, or they are duplicates), the components past that rank fit rounding noise and are left out.

    targets: n_samples x q (e.g. `one_hot(labels)`), or one value per sample.
    """
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, np.newaxis]  # one target per sample: n_samples x 1
    _check_matrix(features, "features")
    _check_matrix(targets, "targets")
    n_samples, n_features = features.shape
    if len(targets) != n_samples:
        raise ValueError(f"Features have {n_samples} rows but targets have {len(targets)}; pass one row per sample.")
    if n_samples < 2:
        raise ValueError(f"PLS needs at least 2 samples, got {n_samples}.")
    max_components = min(n_samples - 1, n_features)
    if not 1 <= n_components <= max_components:
        raise ValueError(
            f"PLS can fit 1 to min(n_samples - 1, n_features) = {max_components} components, "
            f"got n_components={n_components}."
        )
    if np.all(np.ptp(targets, axis=0) == 0):
        raise ValueError("The targets are constant, so no feature can explain them; pass at least two classes.")

    varying = np.ptp(features, axis=0) > 0
    vip = np.zeros(n_features)
    if varying.any():
        fitted_components = min(n_components, int(varying.sum()))
        vip[varying] = _vip_of_fit(features[:, varying], targets, fitted_components, n_features)
    return vip


def _vip_of_fit(features: np.ndarray, targets: np.ndarray, n_components: int, n_total_features: int) -> np.ndarray:
    from sklearn.cross_decomposition import PLSRegression

    pls = PLSRegression(n_components=n_components, scale=True).fit(features, targets)
    weights, scores, target_loadings = pls.x_weights_, pls.x_scores_, pls.y_loadings_  # p x H, n x H, q x H
    score_energy = np.sum(scores**2, axis=0)  # t_h' t_h, shape H
    # Also drops the all-zero components sklearn leaves when the targets' residual runs out early.
    real = score_energy > _RANK_TOLERANCE * score_energy.max()
    explained = score_energy[real] * np.sum(target_loadings[:, real] ** 2, axis=0)  # s_h
    unit_weights = weights[:, real] / np.linalg.norm(weights[:, real], axis=0)  # every column has norm 1
    return np.sqrt(n_total_features * (unit_weights**2 @ explained) / explained.sum())


def one_hot(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Class indices as an n_samples x num_classes indicator matrix: the PLS targets of a classifier.

    num_classes defaults to the largest label + 1; passing it only fixes the column count, since a class that
    is absent from the sample gives a constant column, which explains nothing in PLS.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Labels must be a 1-D array of integer class indices, got shape {labels.shape} of {labels.dtype}."
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"Labels must lie in [0, {num_classes}), got values from {labels.min()} to {labels.max()}.")
    return np.eye(num_classes)[labels]


def inf_fs_scores(features: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Infinite Feature Selection scores (Roffo et al., ICCV 2015): unsupervised, from variance and redundancy.

    The features are the nodes of a complete graph with edge weights
        A_ij = alpha * max(sigma_i, sigma_j) + (1 - alpha) * (1 - |spearman(i, j)|),
    sigma the per-feature std min-max normalised to [0, 1]: an edge is heavy where either end varies much and
    the two ends are not redundant. A feature's score sums the value of every path that starts at it, of any
    length k, weighted r^k; the geometric series has a closed form:
        score_i = sum_j S_ij,  S = sum_{k>=1} (rA)^k = (I - rA)^-1 - I,  r = 0.9 / rho(A).
    A constant feature has no defined correlation: as in the original code it counts as uncorrelated (0) with
    every feature, itself included; all sigma are 0 when every std is the same (the original's 0/0 -> 0).
    Kept for fidelity, with a consequence: a dead channel has full (1 - alpha) correlation edges to every
    feature, so it scores like an independent feature and above redundant live ones; inf-FS sees its low
    variance, not its uselessness.

    Roffo's 2016 MATLAB release puts alpha on the correlation term and uses r = 0.99 / rho(A); with the default
    alpha = 0.5 the two placements agree.
    """
    import scipy.linalg

    features = np.asarray(features, dtype=np.float64)
    _check_matrix(features, "features")
    if len(features) < 2:
        raise ValueError(f"Inf-FS needs at least 2 samples, got {len(features)}.")
    if not 0 <= alpha <= 1:
        raise ValueError(f"The inf-FS mixing weight alpha must lie in [0, 1], got {alpha}.")
    graph = alpha * _spread_term(features) + (1 - alpha) * (1 - np.abs(_spearman_correlation(features)))  # p x p
    spectral_radius = np.abs(scipy.linalg.eigvalsh(graph)).max()
    n_features = len(graph)
    if spectral_radius == 0:  # no edge has weight, so every path is worth 0
        return np.zeros(n_features)
    decay = _PATH_DECAY / spectral_radius
    # sum_j S_ij = ((I - rA)^-1 1)_i - 1: one solve instead of an inverse; I - rA is positive definite because
    # the eigenvalues of the symmetric rA lie in [-0.9, 0.9].
    path_sums = scipy.linalg.solve(np.eye(n_features) - decay * graph, np.ones(n_features), assume_a="pos")
    return path_sums - 1


def _spread_term(features: np.ndarray) -> np.ndarray:
    """p x p max(sigma_i, sigma_j), sigma the per-feature std min-max normalised to [0, 1]."""
    std = features.std(axis=0)  # the ddof cancels in the normalisation
    span = np.ptp(std)
    sigma = (std - std.min()) / span if span > 0 else np.zeros_like(std)
    return np.maximum.outer(sigma, sigma)


def _spearman_correlation(features: np.ndarray) -> np.ndarray:
    """p x p Spearman correlation: Pearson's of the ranks, 0 wherever a constant feature is involved."""
    import scipy.stats

    ranks = scipy.stats.rankdata(features, axis=0)
    centred = ranks - ranks.mean(axis=0)  # exactly 0 for a constant feature: its ranks are all one half-integer
    norms = np.linalg.norm(centred, axis=0)
    varying = norms > 0
    unit = np.divide(centred, norms, out=np.zeros_like(centred), where=varying)
    correlation = unit.T @ unit
    # Exactly 1 (0 if constant): computed, the diagonal is 1 +- 1e-16, which for a lone feature would be the
    # whole graph and give it a score of 9 instead of 0.
    np.fill_diagonal(correlation, varying)
    return correlation


def stage_importance(
    stage_features: Sequence[np.ndarray],
    labels: np.ndarray,
    n_components: int = 2,
    criterion: Criterion = "pls",
) -> list[float]:
    """The paper's importance score of each stage: the mean importance of the features the stage outputs.

    stage_features[i] is stage i's last-block output, globally average-pooled (n_images x channels of stage
    i), its rows in the order of labels (one class index per image). The last block is used because, with
    identity shortcuts, its output carries the whole stage's refinements (paper, "Importance Score").

    One PLS model per stage: the paper scores "the features of S_i" and averages them "for each stage", and
    the authors' code fits a fresh PLSRegression(n_components=2) on each stage's pooled features and averages
    its VIPs. Per stage also keeps a stage's score a function of its own features, so a joint fit over stages
    cannot shift it when another stage grows. As mean VIP^2 is 1 in every fit, the "pls" score is 1 when every
    channel of the stage contributes equally to the label-predictive components, and drops as the importance
    concentrates on fewer channels (dead channels count as VIP 0).

    "inf_fs" is unsupervised: it ignores labels and n_components.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown stage-importance criterion {criterion!r}; use one of {', '.join(CRITERIA)}.")
    if len(stage_features) == 0:
        raise ValueError("Pass the pooled features of at least one stage.")
    if criterion == "inf_fs":
        return [float(np.mean(inf_fs_scores(features))) for features in stage_features]
    targets = one_hot(labels)
    return [float(np.mean(vip_scores(features, targets, n_components))) for features in stage_features]


def _check_matrix(matrix: np.ndarray, name: str) -> None:
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"{name.capitalize()} must be a 2-D array with at least one column, got shape {matrix.shape}.")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name.capitalize()} contain NaN or infinite values; every value must be finite.")
