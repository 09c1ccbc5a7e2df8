"""Feature statistics and the Fréchet distance between them: FID's last step, without images or extractors.

docs/protocol.md §5.7. ``eval.fid`` turns images into features (a ``MetricBackend``'s extractor) and features
into statistics (``stats_from_features``); everything here starts from statistics (or features, for the
bootstrap), so one path serves image pairs, statistics files and bootstrap replicates:

- ``frechet_distance(stats_1, stats_2, formula)``: the FID a backend reports, with the backend's formula
  (``MetricBackend.frechet``): torch-fidelity's ``fid_statistics_to_metric`` (eigenvalues of sigma_1 sigma_2) or
  pytorch-fid's ``calculate_frechet_distance`` (``frechet_distance_pytorch_fid``, scipy sqrtm with its retry);
- ``fid_from_stats``: an independent Fréchet distance (scipy sqrtm) used to cross-check both;
- ``FrechetReference``: the same distance many times against one fixed reference (bootstrap replicates,
  ``eval.stats.fid_bootstrap``).

Notation: mu = feature mean [D]; sigma = unbiased feature covariance [D, D];
FID = ||mu_1 - mu_2||^2 + tr(sigma_1 + sigma_2 - 2 (sigma_1 sigma_2)^(1/2)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import scipy.linalg

# Fréchet distance formulas (``MetricBackend.frechet``, ``frechet_distance``).
FRECHET_TORCH_FIDELITY, FRECHET_PYTORCH_FID = "torch-fidelity", "pytorch-fid"

StatsLike = Union["FeatureStats", Sequence[np.ndarray]]


class StatsFileError(ValueError):
    """A statistics file is missing, corrupt or made by another feature extractor (one-line message)."""


@dataclass(frozen=True)
class FeatureStats:
    """Feature statistics of an image set, as stored in a ``.npz`` file.

    Attributes:
        mu: feature mean, float64  # [D]
        sigma: unbiased feature covariance, float64  # [D, D]
        meta: provenance (backend, feature_extractor, feature_layer, num_images, ...)
        features: the features themselves, float32, kept for KID  # [N, D] or None
    """

    mu: np.ndarray
    sigma: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None


def stats_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) of features [N, D]: mean and unbiased covariance, float64 (as torch-fidelity)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N, D] with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def validate_stats(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    """One-line error unless mu is [D] and sigma [D, D], both finite."""
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise StatsFileError(f"{where}: mu must be [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsFileError(f"{where}: mu or sigma contains NaN or infinite values")


def _mu_sigma(stats: StatsLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) as float64 arrays from a FeatureStats or a (mu, sigma) pair."""
    if isinstance(stats, FeatureStats):
        return stats.mu, stats.sigma
    mu, sigma = stats
    return np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)


def _checked_pair(stats1: StatsLike, stats2: StatsLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mu1, sigma1, mu2, sigma2) of two statistics, validated and of the same feature dimension."""
    mu1, sigma1 = _mu_sigma(stats1)
    mu2, sigma2 = _mu_sigma(stats2)
    validate_stats(mu1, sigma1, "stats1")
    validate_stats(mu2, sigma2, "stats2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} and {mu2.shape[0]}")
    return mu1, sigma1, mu2, sigma2


def fid_from_stats(stats1: StatsLike, stats2: StatsLike) -> float:
    """Fréchet distance between Gaussians N(mu_1, sigma_1) and N(mu_2, sigma_2) (Heusel et al. 2017, eq. 6).

    ||mu_1 - mu_2||^2 + tr(sigma_1) + tr(sigma_2) - 2 tr((sigma_1 sigma_2)^(1/2)), with the matrix
    square root from ``scipy.linalg.sqrtm``. Rounding can make sigma_1 sigma_2 slightly
    non-positive, giving sqrtm a small imaginary part; only the real part of the trace is used
    (torch-fidelity likewise keeps the real part of sqrt(eigenvalues)). Written independently of
    torch-fidelity to cross-check it.

    Args:
        stats1, stats2: FeatureStats or (mu [D], sigma [D, D]) pairs.
    """
    mu1, sigma1, mu2, sigma2 = _checked_pair(stats1, stats2)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    tr_covmean = float(np.trace(covmean).real)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# pytorch-fid's defaults: offset added to both covariances when sqrtm fails, tolerance on the imaginary diagonal.
PYTORCH_FID_EPS = 1e-6
PYTORCH_FID_IMAG_ATOL = 1e-3


def frechet_distance_pytorch_fid(stats1: StatsLike, stats2: StatsLike, eps: float = PYTORCH_FID_EPS) -> float:
    """Fréchet distance as pytorch-fid computes it (``fid_score.calculate_frechet_distance``).

    The same formula as ``fid_from_stats``, with pytorch-fid's two safeguards: if ``sqrtm(sigma_1 sigma_2)`` is
    not finite (singular product), it is recomputed as ``sqrtm((sigma_1 + eps I)(sigma_2 + eps I))``; a complex
    result whose diagonal has an imaginary part above 1e-3 is an error, otherwise the real part is used. Whenever
    the first sqrtm is finite and nearly real this equals ``fid_from_stats``.

    Args:
        stats1, stats2: FeatureStats or (mu [D], sigma [D, D]) pairs.
        eps: diagonal offset of the retry (pytorch-fid: 1e-6).
    Raises:
        ValueError: one line, on mismatched dimensions or a large imaginary component.
    """
    mu1, sigma1, mu2, sigma2 = _checked_pair(stats1, stats2)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=PYTORCH_FID_IMAG_ATOL):
            raise ValueError(f"FID: sqrtm(sigma_1 sigma_2) has an imaginary component of "
                             f"{np.max(np.abs(covmean.imag)):.3g} (pytorch-fid refuses this too)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix [D, D] by eigendecomposition; eigenvalues below 0
    (rounding) are clipped to 0."""
    w, v = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


@dataclass(frozen=True)
class FrechetReference:
    """A fixed reference N(mu, sigma) against which many FIDs are computed (bootstrap replicates).

    The same Fréchet distance as ``fid_from_stats`` (cross-checked in tests), organised so that one
    evaluation is cheap: with R = sigma^(1/2) (computed once), sigma_a sigma = (sigma_a R) R and
    R sigma_a R = R (sigma_a R) share their non-zero eigenvalues, and R sigma_a R is symmetric PSD, so
    tr((sigma_a sigma)^(1/2)) = sum sqrt(eigvalsh(R sigma_a R)). For centred features X [n, D],
    R sigma_a R = Y^T Y with Y = X R / sqrt(n - 1), whose non-zero eigenvalues are those of Y Y^T [n, n]:
    O(n^2 D) per FID when n < D.

    Attributes:
        mu: reference mean [D]; sigma_sqrt: R [D, D]; trace_sigma: tr(sigma).
    """

    mu: np.ndarray
    sigma_sqrt: np.ndarray
    trace_sigma: float

    @classmethod
    def from_stats(cls, stats_ref: StatsLike) -> FrechetReference:
        mu, sigma = _mu_sigma(stats_ref)
        validate_stats(mu, sigma, "reference")
        return cls(mu, sqrt_psd(sigma), float(np.trace(sigma)))

    def fid(self, features: np.ndarray) -> float:
        """FID of the Gaussian of ``features`` [n, D] (mean, unbiased covariance) against the reference."""
        x = self._check(features)
        return self._fid(x, x @ self.sigma_sqrt)

    def fid_resampled(self, features: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """FIDs of the row subsets ``features[idx]`` for each row idx of ``indices`` [B, m] -> [B].

        X R is computed once: (X[idx] - mean) R = (X R)[idx] - mean((X R)[idx]), so a replicate costs a
        Gram matrix, not a product with R.
        """
        x = self._check(features)
        xr = x @ self.sigma_sqrt
        return np.array([self._fid(x[idx], xr[idx]) for idx in np.asarray(indices)])

    def _check(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] != self.mu.shape[0]:
            raise ValueError(f"features must be [n, {self.mu.shape[0]}] with n >= 2, got shape {x.shape}")
        return x

    def _fid(self, x: np.ndarray, xr: np.ndarray) -> float:
        """FID of features x [n, D] given xr = x R [n, D]."""
        n, d = x.shape
        mu_a = x.mean(axis=0)
        xc = x - mu_a
        y = (xr - xr.mean(axis=0)) / np.sqrt(n - 1)  # = xc R / sqrt(n - 1)
        eig = np.linalg.eigvalsh(y @ y.T if n <= d else y.T @ y)
        tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
        diff = mu_a - self.mu
        return float(diff @ diff + (xc * xc).sum() / (n - 1) + self.trace_sigma - 2.0 * tr_covmean)


def frechet_distance(stats1: StatsLike, stats2: StatsLike, formula: str = FRECHET_TORCH_FIDELITY) -> float:
    """The FID a backend reports between two statistics, with its formula (``MetricBackend.frechet``).

    "torch-fidelity": torch-fidelity's ``fid_statistics_to_metric`` (what ``torch_fidelity.calculate_metrics``
    reports for two image sets); "pytorch-fid": ``frechet_distance_pytorch_fid``. Both agree with
    ``fid_from_stats`` up to rounding (tests/test_fid.py, tests/test_fid_pytorch_fid.py).

    Args:
        stats1, stats2: FeatureStats or (mu [D], sigma [D, D]) pairs.
        formula: "torch-fidelity" or "pytorch-fid".
    """
    if formula == FRECHET_PYTORCH_FID:
        return frechet_distance_pytorch_fid(stats1, stats2)
    if formula != FRECHET_TORCH_FIDELITY:
        raise ValueError(f"unknown Fréchet distance formula {formula!r}; "
                         f"expected {FRECHET_TORCH_FIDELITY!r} or {FRECHET_PYTORCH_FID!r}")
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    (mu1, sigma1), (mu2, sigma2) = _mu_sigma(stats1), _mu_sigma(stats2)
    metric = fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}, False)
    return float(metric[KEY_METRIC_FID])
