"""Uncertainty of the benchmark's statistics: bootstrap intervals over units and seeds, FID replicates, KID.

Pure numpy (``fid_bootstrap`` imports ``eval.fid`` lazily for its Fréchet distance, the project's only
one). Every random function takes a seeded ``np.random.Generator`` (or an int seed for one), so an
interval is reproducible.

Record convention (``eval.common.record`` rows): a record may carry ``values``, the per-unit numbers
behind ``value``, and ``units``:

- ``"bootstrap"``: ``values`` are B bootstrap replicates of the statistic (the generated samples resampled
  with replacement, the reference statistics fixed); ``value`` is the statistic on the full set.
- ``"images"``: ``values`` are per-image scores whose mean is ``value``; image i is aligned across methods
  evaluated with the same eval seed.

Per-image records combine over seeds with ``hierarchical_bootstrap``; bootstrap records with
``combine_replicates`` / ``combine_paired_replicates``.

Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13). For FID the bootstrap distribution
sits *above* the full-set value: a resample holds only ~63% distinct samples, which adds about
tr(sigma_gen) / n to the mean term and noise to the covariance term (FID is biased upwards in n;
Chong & Forsyth 2020, "Effectively Unbiased FID"). Percentile intervals of one FID therefore lean high;
``basic_ci`` (the reverse-percentile interval, 2 value - quantiles) corrects a constant shift. Two methods
compared at the same n carry nearly the same shift, so intervals of their difference are less affected.

KID (Binkowski et al. 2018, "Demystifying MMD GANs") is the unbiased MMD^2 with the cubic polynomial
kernel k(x, y) = (x . y / d + 1)^3, averaged over random subsets, as torch-fidelity computes it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from eval.frechet import FrechetReference

# Largest KID subset (torch-fidelity's default subset size).
KID_MAX_SUBSET = 1000
# Default number of bootstrap replicates of an FID in the evaluations' records (their `values`).
FID_BOOTSTRAP = 200
# Elements per vectorised resampling chunk (bounds memory of the [replicates, n] index arrays).
_CHUNK_ELEMENTS = 1 << 22


class Interval(NamedTuple):
    """A point estimate, its interval [lo, hi] and the bootstrap replicates behind it."""

    estimate: float
    lo: float
    hi: float
    replicates: np.ndarray


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A Generator from a Generator or an int seed (None: seed 0, so results are reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")


def _check_n_boot(n_boot: int) -> None:
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")


def _as_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    """values -> finite float64 [n], n >= 1 (one-line ValueError otherwise)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return x


# ---------------------------------------------------------------------------------------------
# Intervals from replicates.


def percentile_ci(replicates: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval: the (1 - level)/2 and (1 + level)/2 quantiles of the replicates (linear interpolation)."""
    _check_level(level)
    r = _as_1d(replicates, "replicates")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def basic_ci(estimate: float, replicates: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Basic (reverse-percentile) interval 2 estimate - q_hi, 2 estimate - q_lo: removes a constant bootstrap
    bias such as the upward shift of FID replicates (Davison & Hinkley 1997, eq. 5.6)."""
    lo, hi = percentile_ci(replicates, level)
    return float(2.0 * estimate - hi), float(2.0 * estimate - lo)


def _resampled_means(x: np.ndarray, n_rep: int, rng: np.random.Generator) -> np.ndarray:
    """Means of n_rep resamples (with replacement, size len(x)) of x [n] -> [n_rep], in memory-bounded chunks."""
    n = x.shape[0]
    out = np.empty(n_rep, dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // n)
    for i in range(0, n_rep, step):
        k = min(step, n_rep - i)
        out[i : i + k] = x[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> Interval:
    """Percentile bootstrap of the mean of i.i.d. values [n]: (mean, lo, hi, replicates [n_boot])."""
    _check_level(level)
    _check_n_boot(n_boot)
    x = _as_1d(values, "values")
    reps = _resampled_means(x, int(n_boot), _rng(rng))
    return Interval(float(x.mean()), *percentile_ci(reps, level), reps)


# ---------------------------------------------------------------------------------------------
# Seeds x units: per-unit values (e.g. per-image scores), one group per seed.


def _groups(groups: Sequence[Sequence[float] | np.ndarray], what: str) -> list[np.ndarray]:
    if len(groups) == 0:
        raise ValueError(f"{what}: no seeds")
    return [_as_1d(g, f"{what}[{i}]") for i, g in enumerate(groups)]


def hierarchical_bootstrap(
    groups: Sequence[Sequence[float] | np.ndarray],
    n_boot: int = 2000,
    level: float = 0.95,
    rng: np.random.Generator | int | None = None,
    paired_with: Sequence[Sequence[float] | np.ndarray] | None = None,
) -> Interval:
    """Two-level bootstrap of the mean of seed means (seeds, then units within each seed; Davison & Hinkley
    1997, §3.8), so the interval covers both seed-to-seed and unit-to-unit variability.

    Each replicate draws len(groups) seeds with replacement and, independently for every draw (a seed drawn
    twice gets two resamples), resamples that seed's units with replacement; the replicate is the mean of
    the resampled seed means.

    Resampling at both levels is conservative: the unit-level noise enters twice (once through the spread
    of the observed seed means, once through the unit resampling), so with no true between-seed variance
    the replicate variance is about 2 sigma_unit^2 / (units * seeds), twice the pooled one (width x sqrt(2));
    the excess vanishes as the between-seed variance dominates (Davison & Hinkley 1997, §3.8; Saravanan
    et al. 2020, "Application of the hierarchical bootstrap to multi-level data in neuroscience").

    Args:
        groups: one 1-d array of per-unit values per seed (lengths may differ).
        paired_with: the same structure for a second method, unit i of seed s aligned with groups[s][i]
            (same images, same eval seed). Then the statistic is the mean of per-unit differences a - b: the
            same unit indices are resampled for both, which removes the variability the two share.
    Returns:
        (estimate, lo, hi, replicates [n_boot]); estimate = mean over seeds of the seed means (of a - b).
    """
    _check_level(level)
    _check_n_boot(n_boot)
    a = _groups(groups, "groups")
    if paired_with is not None:
        b = _groups(paired_with, "paired_with")
        if [len(x) for x in a] != [len(x) for x in b]:
            raise ValueError("paired_with must have the same seeds and units as groups "
                             f"(sizes {[len(x) for x in a]} vs {[len(x) for x in b]})")
        a = [x - y for x, y in zip(a, b)]  # resampling unit i of a - b = same index for both
    gen = _rng(rng)
    n_seeds, n_boot = len(a), int(n_boot)
    chosen = gen.integers(0, n_seeds, size=(n_boot, n_seeds))
    seed_means = np.empty((n_boot, n_seeds), dtype=np.float64)
    for j in range(n_seeds):
        for s in range(n_seeds):
            rows = np.nonzero(chosen[:, j] == s)[0]
            if rows.size:
                seed_means[rows, j] = _resampled_means(a[s], rows.size, gen)
    reps = seed_means.mean(axis=1)
    estimate = float(np.mean([x.mean() for x in a]))
    return Interval(estimate, *percentile_ci(reps, level), reps)


# ---------------------------------------------------------------------------------------------
# Seeds x bootstrap replicates (e.g. FID records with units "bootstrap").


def _draw_replicates(reps: list[np.ndarray], chosen: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """For every (replicate, position), one uniformly drawn replicate of the chosen seed -> [n_boot, S]."""
    out = np.empty(chosen.shape, dtype=np.float64)
    for s, r in enumerate(reps):
        mask = chosen == s
        out[mask] = r[gen.integers(0, r.size, size=int(mask.sum()))]
    return out


def _point(estimates: Sequence[float] | None, reps: list[np.ndarray], what: str) -> float:
    if estimates is None:
        return float(np.mean([r.mean() for r in reps]))
    e = _as_1d(estimates, what)
    if e.size != len(reps):
        raise ValueError(f"{what}: {e.size} estimates for {len(reps)} seeds")
    return float(e.mean())


def combine_replicates(
    replicates_per_seed: Sequence[Sequence[float] | np.ndarray],
    n_boot: int = 2000,
    rng: np.random.Generator | int | None = None,
    level: float = 0.95,
    estimates: Sequence[float] | None = None,
) -> Interval:
    """Interval of a seed-averaged statistic whose seeds each carry bootstrap replicates over samples (FID).

    Each combined replicate draws len(seeds) seeds with replacement and, for each draw, a uniformly chosen
    replicate of that seed, then averages: the spread reflects both sample and seed variability.

    Args:
        replicates_per_seed: one 1-d array of bootstrap replicates per seed (record ``values``).
        estimates: the per-seed full-set statistics (record ``value``); the point estimate is their mean
            (default: the mean of the per-seed replicate means).
    Returns:
        (estimate, lo, hi, combined replicates [n_boot]).
    """
    _check_level(level)
    _check_n_boot(n_boot)
    reps = _groups(replicates_per_seed, "replicates_per_seed")
    gen = _rng(rng)
    chosen = gen.integers(0, len(reps), size=(int(n_boot), len(reps)))
    combined = _draw_replicates(reps, chosen, gen).mean(axis=1)
    return Interval(_point(estimates, reps, "estimates"), *percentile_ci(combined, level), combined)


def combine_paired_replicates(
    replicates_a: Sequence[Sequence[float] | np.ndarray],
    replicates_b: Sequence[Sequence[float] | np.ndarray],
    n_boot: int = 2000,
    rng: np.random.Generator | int | None = None,
    level: float = 0.95,
    estimates_a: Sequence[float] | None = None,
    estimates_b: Sequence[float] | None = None,
    aligned: bool = False,
) -> Interval:
    """Interval of mean_seeds(a - b) for two methods evaluated with the same eval seeds (seed s of a with s of b).

    Each combined replicate draws seeds with replacement (the same draw for a and b, which keeps the pairing
    by seed) and, per drawn seed, one replicate of a and one of b, and averages their differences.

    With ``aligned=False`` the two replicates are drawn independently: valid whatever produced them, but it
    ignores any correlation of the two methods' sampling errors within a seed, so the interval is
    conservative (wider) when those errors are positively correlated, e.g. when both sample sets start from
    the same per-sample noise. With ``aligned=True`` replicate k of a is paired with replicate k of b: use it
    only when replicate k of both came from the same resampled indices (the evaluations here draw them from
    the same bootstrap seed for the same eval seed and n), so the difference keeps the shared variability out.

    Returns:
        (estimate, lo, hi, combined replicates [n_boot]); estimate = mean(estimates_a) - mean(estimates_b).
    """
    _check_level(level)
    _check_n_boot(n_boot)
    a = _groups(replicates_a, "replicates_a")
    b = _groups(replicates_b, "replicates_b")
    if len(a) != len(b):
        raise ValueError(f"paired replicates need the same seeds: {len(a)} vs {len(b)}")
    gen = _rng(rng)
    chosen = gen.integers(0, len(a), size=(int(n_boot), len(a)))
    if aligned:
        if [x.size for x in a] != [x.size for x in b]:
            raise ValueError("aligned=True needs the same number of replicates per seed for a and b")
        diffs = _draw_replicates([x - y for x, y in zip(a, b)], chosen, gen)
    else:
        diffs = _draw_replicates(a, chosen, gen) - _draw_replicates(b, chosen, gen)
    combined = diffs.mean(axis=1)
    estimate = _point(estimates_a, a, "estimates_a") - _point(estimates_b, b, "estimates_b")
    return Interval(estimate, *percentile_ci(combined, level), combined)


# ---------------------------------------------------------------------------------------------
# FID replicates and KID from features.


def bootstrap_indices(n: int, n_boot: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Resampling indices [n_boot, n] (with replacement) of n samples; one row per replicate."""
    _check_n_boot(n_boot)
    if n < 1:
        raise ValueError(f"need at least one sample, got n = {n}")
    return _rng(rng).integers(0, n, size=(int(n_boot), int(n)))


def fid_bootstrap(
    features: np.ndarray,
    ref_mu: np.ndarray,
    ref_sigma: np.ndarray,
    n_boot: int = 200,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """FID replicates [n_boot]: the generated features [n, D] resampled with replacement, the reference
    statistics (mu [D], sigma [D, D]) fixed. Uses ``eval.frechet.FrechetReference`` (the reference's matrix square
    root computed once). Replicates sit above the full-set FID by roughly tr(sigma_gen) / n (module doc)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [n, D] with n >= 2, got shape {x.shape}")
    ref = FrechetReference.from_stats((ref_mu, ref_sigma))
    return ref.fid_resampled(x, bootstrap_indices(x.shape[0], n_boot, rng))


def kid_subset_size(n_a: int, n_b: int, max_size: int = KID_MAX_SUBSET) -> int:
    """Automatic KID subset size min(max_size, min(n_a, n_b) // 2): strictly smaller than both sets, so
    the subsets differ and their spread means something. ValueError if that is below 2."""
    size = min(int(max_size), min(int(n_a), int(n_b)) // 2)
    if size < 2:
        raise ValueError(f"KID needs at least 4 samples per set for a subset of 2 (got {n_a} and {n_b})")
    return size


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x . y / d + 1)^3 (degree 3, gamma 1/d, coef 1) -> [n_x, n_y]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of equal-size samples x, y [m, d] (Gretton et al. 2012, eq. 3):
    mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off - 2.0 * k_xy.mean())


def kid(
    features_a: np.ndarray,
    features_b: np.ndarray,
    subset_size: int | None = None,
    num_subsets: int = 100,
    rng: np.random.Generator | int | None = None,
) -> tuple[float, float]:
    """KID: (mean, std) over ``num_subsets`` subsets of the unbiased MMD^2 with the cubic polynomial kernel.

    Each subset draws ``subset_size`` rows of a and of b without replacement (independently). The default
    size is ``kid_subset_size(n_a, n_b)``; a size >= min(n_a, n_b) is refused, since every subset would then
    be the whole set and the std over subsets would be 0 whatever the data. A single MMD^2 estimate may be
    negative (it is unbiased); the mean over subsets of equal distributions is near 0.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be [n_a, d] and [n_b, d], got {a.shape} and {b.shape}")
    n_a, n_b = a.shape[0], b.shape[0]
    if subset_size is None:
        subset_size = kid_subset_size(n_a, n_b)
    elif not 2 <= int(subset_size) < min(n_a, n_b):
        raise ValueError(f"KID subset_size must satisfy 2 <= subset_size < min(n_a, n_b) = {min(n_a, n_b)}, "
                         f"got {subset_size}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    gen = _rng(rng)
    m = int(subset_size)
    mmds = np.array([mmd2_unbiased(a[gen.choice(n_a, m, replace=False)], b[gen.choice(n_b, m, replace=False)])
                     for _ in range(int(num_subsets))])
    return float(mmds.mean()), float(mmds.std())
