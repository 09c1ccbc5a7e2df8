"""Per-image reconstruction metrics of PDAE (Zhang et al., NeurIPS 2022) and Diff-AE: SSIM, MSE, LPIPS.

Protocol of Table 1 (paper §4.3; identical in the official code, PDAE ``metric/utils.py`` and Diff-AE
``ssim.py`` / ``metrics.py``): every metric is a per-image score, averaged over the evaluation set by the
caller. SSIM and MSE take images in [0, 1], obtained from model images in [-1, 1] by ``to_unit``
(x + 1) / 2 without clamping; LPIPS (or a backend's feature distance) takes [-1, 1].

Declared ranges are checked: values outside [low - RANGE_TOLERANCE, high + RANGE_TOLERANCE] raise a
one-line ``ValueError`` naming the argument and the observed range. The tolerance exists because
decoded images may overshoot their range by rounding; it is far too small to let a [-1, 1] image
pass as [0, 1], which is the mistake the check is there to catch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# `units` of a record whose `values` are per-image scores (image i: the same input image and the same noise for
# every method evaluated with the same eval_seed, so methods can be compared image by image).
IMAGE_UNITS = "images"

# Slack allowed on declared input ranges (decoded images overshoot slightly).
RANGE_TOLERANCE = 1e-3

# Single-scale SSIM constants of the official PDAE / Diff-AE implementation (PDAE metric/utils.py `_ssim`,
# Diff-AE ssim.py `_ssim`), for a data range of 1 (images in [0, 1]).
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def to_unit(x: Tensor) -> Tensor:
    """Map model images in [-1, 1] to [0, 1] by (x + 1) / 2, without clamping."""
    return (x + 1) / 2


def check_range(x: Tensor, name: str, low: float, high: float, tol: float = RANGE_TOLERANCE) -> None:
    """Raise a one-line ``ValueError`` unless every value of ``x`` is finite and in [low - tol, high + tol]."""
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < low - tol or hi > high + tol:
        raise ValueError(
            f"{name} must lie in [{low:g}, {high:g}] (tolerance {tol:g}) but spans [{lo:.4g}, {hi:.4g}]"
        )


def _check_pair(a: Tensor, b: Tensor, low: float, high: float) -> None:
    """Check that a and b are same-shape [N, C, H, W] batches within the declared range."""
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(
            f"a and b must be image batches [N, C, H, W] of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    check_range(a, "a", low, high)
    check_range(b, "b", low, high)


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean squared error on [0, 1] images (Table 1's MSE column).

    Args:
        a, b: images in [0, 1]  # [N, C, H, W]
    Returns:
        mean over channels and pixels of (a - b)^2, float64  # [N]
    """
    _check_pair(a, b, 0.0, 1.0)
    return (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3))


def gaussian_window(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 1-D Gaussian g[k] proportional to exp(-(k - size // 2)^2 / (2 sigma^2)), k = 0..size-1.

    Returns:
        float64 weights summing to 1  # [size]
    """
    k = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Local SSIM of Wang et al. (2004), single scale, exactly as the official PDAE / Diff-AE code computes it.

    Local statistics are weighted by the separable 11x11 Gaussian window (sigma 1.5, ``gaussian_window``)
    through a depthwise cross-correlation with ZERO padding of 5 px on every side ('same' output size,
    ``F.conv2d(x, window, padding=5, groups=C)`` as in the official ``_ssim``):
        SSIM = (2 mu_a mu_b + C1)(2 sigma_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2)),
    with sigma_a^2 = E[a^2] - mu_a^2, sigma_ab = E[ab] - mu_a mu_b (window-weighted, biased),
    C1 = 0.01^2, C2 = 0.03^2 (data range 1). Computed in float64; the official code uses float32,
    which differs by rounding only (below 1e-5).

    Padding convention and its bias: pixels within 5 px of the border see zeros outside the image, so
    their window is partly filled by a constant shared by both images. This pulls local statistics
    towards agreement and raises SSIM near borders; at 16x16 every pixel is within 5 px of a border
    except the central 6x6. Measured on the 64 first held-out digits (16x16) paired with unrelated
    digits (image i vs image (i + 32) mod 64): mean SSIM 0.398 with this zero padding, 0.357 with
    reflect padding of the full map, and 0.155 for scikit-image's ``structural_similarity`` (same
    window, which averages the interior only, excluding the 5-px border). Compare SSIM values with
    the unrelated-pair floor of ``eval.reconstruct``, not with 0.

    Args:
        a, b: images in [0, 1]  # [N, C, H, W]
    Returns:
        SSIM map, float64  # [N, C, H, W]
    """
    _check_pair(a, b, 0.0, 1.0)
    a, b = a.double(), b.double()
    channels = a.shape[1]
    g = gaussian_window().to(a.device)
    window = torch.outer(g, g).expand(channels, 1, SSIM_WINDOW_SIZE, SSIM_WINDOW_SIZE)
    pad = SSIM_WINDOW_SIZE // 2

    def local_mean(x: Tensor) -> Tensor:
        return F.conv2d(x, window, padding=pad, groups=channels)

    # 1. Local means and (biased, window-weighted) second moments.
    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov_ab = local_mean(a * b) - mu_a * mu_b
    # 2. Luminance-contrast-structure product.
    numerator = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov_ab + SSIM_C2)
    denominator = (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return numerator / denominator


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-image SSIM: ``ssim_map`` (zero-padded 'same' map) averaged over channels and ALL pixels, borders
    included, as the official PDAE ``calculate_ssim`` (``ssim_map.mean(1).mean(1).mean(1)``).

    Args:
        a, b: images in [0, 1], i.e. ``to_unit`` of model images  # [N, C, H, W]
    Returns:
        float64  # [N]
    """
    return ssim_map(a, b).mean(dim=(1, 2, 3))


def lpips_distance(a: Tensor, b: Tensor, net: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Per-image LPIPS-like distance ``net(a, b)`` on [-1, 1] images (Table 1's LPIPS column when ``net`` is
    LPIPS-AlexNet; a domain backend's feature distance otherwise).

    Args:
        a, b: images in [-1, 1]  # [N, C, H, W]
        net: any callable (a, b) -> one distance per image, shaped [N] or [N, 1, 1, 1], e.g.
            ``lpips.LPIPS(net='alex')`` or a backend's ``lpips_net`` (see eval.backends)
    Returns:
        float64  # [N]
    """
    _check_pair(a, b, -1.0, 1.0)
    with torch.no_grad():
        d = net(a, b)
    n = a.shape[0]
    if not isinstance(d, Tensor) or d.numel() != n:
        shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
        raise ValueError(f"LPIPS net must return one value per image ({n}), got {shape}")
    return d.reshape(n).double()


def mean_and_sem(values: Tensor) -> tuple[float, float]:
    """Set-level summary of a per-image metric: (mean, standard error of the mean) of values [N]."""
    v = values.double().flatten()
    if v.numel() == 0:
        raise ValueError("cannot summarise an empty set of per-image values")
    sem = float(v.std(unbiased=True)) / math.sqrt(v.numel()) if v.numel() > 1 else float("nan")
    return float(v.mean()), sem


def per_image_fields(values: Tensor) -> dict[str, Any]:
    """Record fields of a per-image metric: ``value`` (the mean over images), ``values`` (the per-image
    floats, in image order) and ``units`` ("images"). values: [N] (any float dtype) -> dict."""
    v = values.detach().double().cpu().flatten()
    if v.numel() == 0:
        raise ValueError("cannot summarise an empty set of per-image values")
    return {"value": float(v.mean()), "values": [float(x) for x in v.tolist()], "units": IMAGE_UNITS}


# LPIPS-style distance on a feature network's stage maps (the `domain` backend, docs/protocol.md §5.10).
_UNIT_NORM_EPS = 1e-10  # LPIPS `normalize_tensor` epsilon


def feature_map_distance(
    maps_x: Sequence[Tensor], maps_y: Sequence[Tensor]
) -> Tensor:
    """LPIPS-style distance with uniform layer weights (Zhang et al. 2018, Eq. 1, w_l = 1/L).

    d(x, y) = mean_l mean_{h,w} || f_l^x / ||f_l^x|| - f_l^y / ||f_l^y|| ||^2, norms over channels, so
    every layer term lies in [0, 4]. Computed in float64.

    :param maps_x: per-layer feature maps of x, each [N, C_l, H_l, W_l].
    :param maps_y: the same layers for y.
    :return: [N] float64 distances (0 for identical inputs).
    """
    if len(maps_x) != len(maps_y) or not maps_x:
        raise ValueError(
            f"feature_map_distance: need the same non-zero number of layers, "
            f"got {len(maps_x)} and {len(maps_y)}"
        )
    total = torch.zeros(maps_x[0].shape[0], dtype=torch.float64, device=maps_x[0].device)
    for layer, (fx, fy) in enumerate(zip(maps_x, maps_y, strict=True)):
        if fx.shape != fy.shape:
            raise ValueError(
                f"feature_map_distance: layer {layer} shapes differ: {tuple(fx.shape)} vs {tuple(fy.shape)}"
            )
        nx = unit_normalize(fx.double())
        ny = unit_normalize(fy.double())
        total = total + (nx - ny).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total / len(maps_x)


def unit_normalize(f: Tensor) -> Tensor:
    """Channel-wise L2 normalisation of a feature map [N, C, H, W] (as lpips.normalize_tensor)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + _UNIT_NORM_EPS)
