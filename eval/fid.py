"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) through torch-fidelity, with reference statistics as files.

docs/protocol.md §5.7, §5.10. The distances are torch-fidelity's; features come from the
extractor a ``MetricBackend`` names (eval.backends). Reference statistics (mu, sigma and, for KID,
the features) are ``.npz`` files produced once by ``compute_reference_stats`` and reused; there is
no implicit name-keyed cache. ``fid_from_stats`` is an independent Fréchet distance (scipy sqrtm)
used to cross-check torch-fidelity's eigenvalue formula; ``frechet_distance_pytorch_fid`` is pytorch-fid's
formula (the FID of the "pytorch-fid" backend, eval.fid_inception); ``FrechetReference`` evaluates the same distance
many times against one fixed reference (bootstrap replicates, ``eval.stats.fid_bootstrap``).

``compute_fid(..., bootstrap=B)`` also returns B bootstrap replicates of the FID (generated features
resampled with replacement, reference statistics fixed); ``fid_records`` turns a result into records
(``values`` = the replicates, ``units`` = "bootstrap", ``n_samples``; KID rows with ``kid_subset``).
KID uses subsets strictly smaller than both sets (default min(1000, n // 2)), so its std over subsets
is informative.

Notation: mu = feature mean [D]; sigma = unbiased feature covariance [D, D];
FID = ||mu_1 - mu_2||^2 + tr(sigma_1 + sigma_2 - 2 (sigma_1 sigma_2)^(1/2)).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import scipy.linalg
import torch
from torch import Tensor
from torch.utils.data import Dataset

from eval import common, metrics, stats
from eval.backends import FRECHET_PYTORCH_FID, MetricBackend

# Default number of KID subsets (torch-fidelity's default) and the largest subset size used.
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = stats.KID_MAX_SUBSET
# Seed of torch-fidelity's KID subset sampling (its default).
KID_SEED = 2020
# Version of the statistics file layout, stored in its meta.
STATS_FORMAT = 1

ImagesLike = Union[Tensor, np.ndarray, Dataset]
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


# ---------------------------------------------------------------------------------------------
# Inputs: torch-fidelity wants datasets of uint8 [3, H, W] tensors.


def to_uint8(x: Tensor) -> Tensor:
    """Quantise images in [-1, 1] to uint8 exactly as PDAE saves them: floor((x + 1) / 2 * 255 + 0.5), clamped."""
    return ((x + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def _as_uint8_rgb(x: Any, what: str) -> Tensor:
    """One image (uint8 [C, H, W], or float in [-1, 1]) with C in {1, 3} -> uint8 [3, H, W]."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must be an image tensor [C, H, W] with C = 1 or 3, got {shape}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise ValueError(f"{what} must be uint8 or float in [-1, 1], got {x.dtype}")
        metrics.check_range(x, what, -1.0, 1.0)
        x = to_uint8(x)
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


class Uint8Images(Dataset):
    """Images as torch-fidelity input: item i is uint8 [3, H, W] (greyscale repeated to 3 channels).

    Args:
        images: uint8 [N, C, H, W] (tensor or array), float [N, C, H, W] in [-1, 1] (quantised by
            ``to_uint8``, as when samples are saved to PNG), or a Dataset whose items are such
            [C, H, W] images or (image, label) pairs; C = 1 or 3.
    """

    def __init__(self, images: ImagesLike):
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if isinstance(images, Tensor):
            if images.dim() != 4 or images.shape[1] not in (1, 3):
                raise ValueError(f"images must be [N, C, H, W] with C = 1 or 3, got {tuple(images.shape)}")
            if images.dtype != torch.uint8:
                if not images.is_floating_point():
                    raise ValueError(f"images must be uint8 or float in [-1, 1], got {images.dtype}")
                metrics.check_range(images, "images", -1.0, 1.0)
        elif not isinstance(images, Dataset):
            raise ValueError(f"images must be a tensor, an array or a Dataset, got {type(images).__name__}")
        if len(images) == 0:
            raise ValueError("images is empty")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        item = self.images[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        return _as_uint8_rgb(item, f"image {i}")


def _resolve_cuda(cuda: bool | None) -> bool:
    """Use the GPU when one is available, unless told otherwise."""
    return torch.cuda.is_available() if cuda is None else bool(cuda)


# ---------------------------------------------------------------------------------------------
# Features and statistics.


def extract_features(
    images: ImagesLike, backend: MetricBackend, batch_size: int = 64, cuda: bool | None = None
) -> np.ndarray:
    """Features of ``backend``'s torch-fidelity extractor (its FID layer) for every image.

    Returns:
        float64  # [N, D]
    """
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    cuda = _resolve_cuda(cuda)
    dataset = Uint8Images(images)
    layer = backend.feature_layer("fid")
    extractor = create_feature_extractor(
        backend.feature_extractor, [layer], cuda=cuda, verbose=False, **backend.fidelity_kwargs
    )
    features = get_featuresdict_from_dataset(dataset, extractor, batch_size, cuda, True, False)[layer]
    return features.double().numpy()


def stats_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) of features [N, D]: mean and unbiased covariance, float64 (as torch-fidelity)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N, D] with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def feature_stats(
    images: ImagesLike, backend: MetricBackend, batch_size: int = 64, cuda: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) of the backend's FID features of ``images`` (see ``Uint8Images``)."""
    return stats_from_features(extract_features(images, backend, batch_size, cuda))


def _validate_stats(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    """One-line error unless mu is [D] and sigma [D, D], both finite."""
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise StatsFileError(f"{where}: mu must be [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsFileError(f"{where}: mu or sigma contains NaN or infinite values")


def save_stats(
    path: str | os.PathLike,
    mu: np.ndarray,
    sigma: np.ndarray,
    meta: dict[str, Any],
    features: np.ndarray | None = None,
) -> None:
    """Write statistics atomically to an ``.npz`` file: mu, sigma, meta (JSON) and optionally features (float32)."""
    path = Path(path)
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    _validate_stats(mu, sigma, str(path))
    arrays: dict[str, np.ndarray] = {"mu": mu, "sigma": sigma, "meta": np.array(json.dumps(meta, sort_keys=True))}
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != mu.shape[0]:
            raise ValueError(f"features must be [N, {mu.shape[0]}], got {features.shape}")
        arrays["features"] = features
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_stats(path: str | os.PathLike) -> FeatureStats:
    """Read a file written by ``save_stats``; a missing or corrupt file raises a one-line ``StatsFileError``."""
    path = Path(path)
    if not path.is_file():
        raise StatsFileError(f"FID statistics file {path} does not exist; create it with compute_reference_stats")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise StatsFileError(f"FID statistics file {path} is corrupt ({type(exc).__name__}: {reason})") from None
    missing = [key for key in ("mu", "sigma", "meta") if key not in arrays]
    if missing:
        raise StatsFileError(f"FID statistics file {path} lacks {', '.join(missing)}")
    mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
    features = arrays.get("features")
    _validate_stats(mu, sigma, str(path))
    if not isinstance(meta, dict):
        raise StatsFileError(f"FID statistics file {path}: meta is not a JSON object")
    return FeatureStats(mu=mu, sigma=sigma, meta=meta, features=features)


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
    _validate_stats(mu1, sigma1, "stats1")
    _validate_stats(mu2, sigma2, "stats2")
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
        _validate_stats(mu, sigma, "reference")
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


def compute_reference_stats(
    images: ImagesLike,
    backend: MetricBackend,
    path: str | os.PathLike,
    *,
    batch_size: int = 64,
    keep_features: bool = True,
    cuda: bool | None = None,
    meta: dict[str, Any] | None = None,
) -> FeatureStats:
    """Compute the backend's feature statistics of a reference set once and write them to ``path``.

    Args:
        keep_features: also store the features (float32, N x D), which KID needs.
        meta: extra provenance (dataset, image indices file, ...), merged into the stored meta.
    """
    features = extract_features(images, backend, batch_size, cuda)
    mu, sigma = stats_from_features(features)
    full_meta = {
        "format": STATS_FORMAT,
        "backend": backend.fid_backend_name,
        "feature_extractor": backend.feature_extractor,
        "feature_layer": backend.feature_layer("fid"),
        "num_images": int(features.shape[0]),
        **(meta or {}),
    }
    save_stats(path, mu, sigma, full_meta, features if keep_features else None)
    return load_stats(path)


# ---------------------------------------------------------------------------------------------
# FID and KID.


def _check_reference(ref: FeatureStats, backend: MetricBackend, where: str, kid: bool) -> None:
    """The reference statistics must come from the backend's extractor and layer (and hold features for KID)."""
    expected_meta = {"feature_extractor": backend.feature_extractor, "feature_layer": backend.feature_layer("fid")}
    for key, expected in expected_meta.items():
        if ref.meta.get(key) != expected:
            raise StatsFileError(
                f"{where} was made with {key}={ref.meta.get(key)!r}, but the {backend.fid_backend_name} backend uses "
                f"{expected!r}"
            )
    if kid and ref.features is None:
        raise StatsFileError(
            f"{where} holds no features, which KID needs; recompute it with keep_features=True or pass kid=False"
        )


def reference_stats(
    images_b_or_stats: ImagesLike | FeatureStats | str | os.PathLike,
    backend: MetricBackend,
    *,
    kid: bool = False,
    batch_size: int = 64,
    cuda: bool | None = None,
) -> tuple[FeatureStats, str]:
    """Reference statistics from a statistics file, a FeatureStats, or images (features extracted here,
    kept for KID), checked against the backend's extractor and layer.

    Returns:
        (FeatureStats, a description of the reference for the result: the file path, or "images")
    """
    if isinstance(images_b_or_stats, (str, os.PathLike)):
        reference, where = load_stats(images_b_or_stats), str(images_b_or_stats)
    elif isinstance(images_b_or_stats, FeatureStats):
        reference, where = images_b_or_stats, "reference statistics"
    else:
        features = extract_features(images_b_or_stats, backend, batch_size, cuda)
        mu, sigma = stats_from_features(features)
        meta = {"backend": backend.fid_backend_name, "feature_extractor": backend.feature_extractor,
                "feature_layer": backend.feature_layer("fid"), "num_images": int(features.shape[0])}
        reference, where = FeatureStats(mu=mu, sigma=sigma, meta=meta, features=features), "images"
    _check_reference(reference, backend, where, kid)
    return reference, where


def _kid_subset(requested: int | None, n_a: int, n_b: int) -> int:
    """KID subset size: ``requested`` (2 <= size < min(n_a, n_b)) or min(1000, min(n_a, n_b) // 2)."""
    if requested is None:
        try:
            return stats.kid_subset_size(n_a, n_b, KID_MAX_SUBSET_SIZE)
        except ValueError:
            raise ValueError(f"KID needs at least 4 images per set (got {n_a} and {n_b}); pass kid=False") from None
    if not 2 <= int(requested) < min(n_a, n_b):
        raise ValueError(f"kid_subset_size must satisfy 2 <= size < min(N_a, N_b) = {min(n_a, n_b)}, got "
                         f"{requested} (subsets as large as a set are all that set: their spread means nothing)")
    return int(requested)


def compute_fid(
    images_a: ImagesLike,
    images_b_or_stats: ImagesLike | FeatureStats | str | os.PathLike,
    backend: MetricBackend,
    *,
    kid: bool = True,
    kid_subset_size: int | None = None,
    kid_subsets: int = KID_SUBSETS,
    batch_size: int = 64,
    cuda: bool | None = None,
    seed: int = KID_SEED,
    bootstrap: int = 0,
    bootstrap_seed: int | Sequence[int] = 0,
) -> dict[str, Any]:
    """FID (and KID) of ``images_a`` against images or precomputed reference statistics.

    Features come from the backend's torch-fidelity extractor; the FID is torch-fidelity's
    ``fid_statistics_to_metric`` (``frechet_distance_pytorch_fid`` when ``backend.frechet`` is "pytorch-fid")
    and the KID its ``kid_features_to_metric`` (what ``torch_fidelity.calculate_metrics`` computes for two
    image sets). With ``bootstrap`` B > 0, also B
    bootstrap replicates of the FID: the features of ``images_a`` resampled with replacement
    (``eval.stats.fid_bootstrap``, indices from ``np.random.default_rng(bootstrap_seed)``), the reference fixed.

    Args:
        images_a: see ``Uint8Images``.
        images_b_or_stats: images, a FeatureStats, or the path of a file from ``compute_reference_stats``.
        kid: also compute KID (polynomial kernel, ``kid_subsets`` subsets).
        kid_subset_size: default min(1000, min(N_a, N_b) // 2); must be < min(N_a, N_b).
        cuda: default: use the GPU when available.
        seed: seed of the KID subset sampling.
        bootstrap: number of FID bootstrap replicates (0: none).
        bootstrap_seed: seed of the resampling; the same seed and N give the same resampled indices, so the
            replicates of two methods evaluated with the same seed are paired replicate by replicate.
    Returns:
        {"fid", "kid_mean", "kid_std" (if kid), "backend", "feature_extractor", "feature_layer",
         "num_images_a", "num_images_b", "kid_subset_size", "kid_subsets", "reference",
         "fid_replicates" (list of B floats, if bootstrap)}
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    cuda = _resolve_cuda(cuda)
    layer = backend.feature_layer("fid")
    if kid and backend.feature_layer("kid") != layer:
        raise ValueError(f"the {backend.fid_backend_name} backend uses different FID and KID layers; unsupported")
    dataset_a = Uint8Images(images_a)
    n_a = len(dataset_a)
    reference, where = reference_stats(images_b_or_stats, backend, kid=kid, batch_size=batch_size, cuda=cuda)
    n_b = int(reference.meta.get("num_images", len(reference.features) if reference.features is not None else 0))
    subset = _kid_subset(kid_subset_size, n_a, len(reference.features)) if kid else None

    features_a = extract_features(dataset_a, backend, batch_size, cuda)
    mu_a, sigma_a = stats_from_features(features_a)
    if backend.frechet == FRECHET_PYTORCH_FID:
        scores = {KEY_METRIC_FID: frechet_distance_pytorch_fid((mu_a, sigma_a), (reference.mu, reference.sigma))}
    else:
        scores = fid_statistics_to_metric({"mu": mu_a, "sigma": sigma_a},
                                          {"mu": reference.mu, "sigma": reference.sigma}, False)
    if kid:
        features_b = torch.from_numpy(reference.features.astype(np.float64))
        scores.update(kid_features_to_metric(torch.from_numpy(features_a), features_b, kid_subsets=kid_subsets,
                                             kid_subset_size=subset, rng_seed=seed, verbose=False))

    result: dict[str, Any] = {
        "fid": float(scores[KEY_METRIC_FID]),
        "backend": backend.fid_backend_name,
        "feature_extractor": backend.feature_extractor,
        "feature_layer": layer,
        "num_images_a": n_a,
        "num_images_b": n_b,
        "reference": where,
    }
    if kid:
        result.update(
            kid_mean=float(scores[KEY_METRIC_KID_MEAN]),
            kid_std=float(scores[KEY_METRIC_KID_STD]),
            kid_subset_size=subset,
            kid_subsets=kid_subsets,
        )
    if bootstrap:
        rng = np.random.default_rng(bootstrap_seed)
        replicates = stats.fid_bootstrap(features_a, reference.mu, reference.sigma, int(bootstrap), rng)
        result["fid_replicates"] = [float(v) for v in replicates]
    return result


def fid_records(prov: dict[str, Any], result: dict[str, Any], **columns: Any) -> list[dict[str, Any]]:
    """Records of one ``compute_fid`` result: an "fid" row and, if KID was computed, a "kid" row.

    Both carry ``n_samples`` (the number of images evaluated) and ``columns``; the fid row carries the
    bootstrap replicates as ``values`` with ``units`` "bootstrap" (when computed), the kid row the subset
    size as ``kid_subset``. ``value`` is the full-set FID / the mean KID over subsets.
    """
    cols = {**columns, "n_samples": int(result["num_images_a"])}
    fid_row = common.record(prov, "fid", result["fid"], result["backend"], **cols)
    if "fid_replicates" in result:
        fid_row.update(values=list(result["fid_replicates"]), units="bootstrap")
    rows = [fid_row]
    if "kid_mean" in result:
        rows.append(common.record(prov, "kid", result["kid_mean"], result["backend"], **cols,
                                  kid_subset=int(result["kid_subset_size"])))
    return rows
