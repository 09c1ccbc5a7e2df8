"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) through torch-fidelity, with reference statistics as files.

docs/protocol.md §5.7, §5.10. One path: images -> features (the extractor a ``MetricBackend`` names,
eval.backends) -> statistics (``stats_from_features``) -> the backend's Fréchet distance
(``eval.frechet.frechet_distance``: torch-fidelity's formula, or pytorch-fid's for the "pytorch-fid" backend).
A reference given as images goes through the same path as one given as a statistics file. Reference statistics
(mu, sigma and, for KID, the features) are ``.npz`` files produced once by ``compute_reference_stats`` and
reused; there is no implicit name-keyed cache. The distances themselves (``fid_from_stats``, the independent
scipy-sqrtm cross-check; ``frechet_distance_pytorch_fid``; ``FrechetReference`` for many FIDs against one
reference) live in ``eval.frechet`` and are importable from here too.

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
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from eval import common, metrics, stats
from eval.backends import MetricBackend
from eval.frechet import (  # noqa: F401 - the distances are importable from eval.fid too
    PYTORCH_FID_EPS,
    PYTORCH_FID_IMAG_ATOL,
    FeatureStats,
    FrechetReference,
    StatsFileError,
    StatsLike,
    fid_from_stats,
    frechet_distance,
    frechet_distance_pytorch_fid,
    sqrt_psd,
    stats_from_features,
    validate_stats,
)

# Default number of KID subsets (torch-fidelity's default) and the largest subset size used.
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = stats.KID_MAX_SUBSET
# Seed of torch-fidelity's KID subset sampling (its default).
KID_SEED = 2020
# Version of the statistics file layout, stored in its meta.
STATS_FORMAT = 1

ImagesLike = Union[Tensor, np.ndarray, Dataset]


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



def feature_stats(
    images: ImagesLike, backend: MetricBackend, batch_size: int = 64, cuda: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) of the backend's FID features of ``images`` (see ``Uint8Images``)."""
    return stats_from_features(extract_features(images, backend, batch_size, cuda))



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
    validate_stats(mu, sigma, str(path))
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
    validate_stats(mu, sigma, str(path))
    if not isinstance(meta, dict):
        raise StatsFileError(f"FID statistics file {path}: meta is not a JSON object")
    return FeatureStats(mu=mu, sigma=sigma, meta=meta, features=features)




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

    One path for both kinds of reference: features of ``images_a`` (the backend's torch-fidelity extractor) ->
    statistics -> ``eval.frechet.frechet_distance`` against the reference statistics (``reference_stats``: read
    from a file, given, or computed from images the same way) with the backend's formula: torch-fidelity's
    ``fid_statistics_to_metric``, or ``frechet_distance_pytorch_fid`` when ``backend.frechet`` is "pytorch-fid".
    KID is torch-fidelity's ``kid_features_to_metric`` on the two feature sets (what
    ``torch_fidelity.calculate_metrics`` computes for two image sets). With ``bootstrap`` B > 0, also B
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
    result: dict[str, Any] = {
        "fid": frechet_distance(stats_from_features(features_a), reference, backend.frechet),
        "backend": backend.fid_backend_name,
        "feature_extractor": backend.feature_extractor,
        "feature_layer": layer,
        "num_images_a": n_a,
        "num_images_b": n_b,
        "reference": where,
    }
    if kid:
        result.update(kid_from_features(features_a, reference.features, subset, kid_subsets, seed))
    if bootstrap:
        rng = np.random.default_rng(bootstrap_seed)
        replicates = stats.fid_bootstrap(features_a, reference.mu, reference.sigma, int(bootstrap), rng)
        result["fid_replicates"] = [float(v) for v in replicates]
    return result


def kid_from_features(
    features_a: np.ndarray, features_b: np.ndarray, subset_size: int, subsets: int = KID_SUBSETS, seed: int = KID_SEED
) -> dict[str, Any]:
    """torch-fidelity's KID (``kid_features_to_metric``) of features [N_a, D] against [N_b, D]: ``subsets`` random
    subsets of ``subset_size`` from each set, seeded by ``seed``.

    Returns:
        {"kid_mean", "kid_std", "kid_subset_size", "kid_subsets"}
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    scores = kid_features_to_metric(
        torch.from_numpy(np.asarray(features_a)), torch.from_numpy(np.asarray(features_b).astype(np.float64)),
        kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=seed, verbose=False,
    )
    return {
        "kid_mean": float(scores[KEY_METRIC_KID_MEAN]),
        "kid_std": float(scores[KEY_METRIC_KID_STD]),
        "kid_subset_size": subset_size,
        "kid_subsets": subsets,
    }


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
