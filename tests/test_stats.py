"""eval.stats: bootstrap intervals (closed-form agreement, coverage), the hierarchical and paired bootstraps,
combined FID replicates, FID replicates against a fixed reference, and KID."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from eval import fid, stats


def width(interval) -> float:
    return interval.hi - interval.lo


# ---------------------------------------------------------------------------------------------
# Intervals of a mean


def test_percentile_and_basic_ci():
    r = np.arange(101.0)  # quantiles are exact on 0..100
    assert stats.percentile_ci(r, 0.9) == pytest.approx((5.0, 95.0))
    assert stats.basic_ci(40.0, r, 0.9) == pytest.approx((80.0 - 95.0, 80.0 - 5.0))
    with pytest.raises(ValueError, match="level"):
        stats.percentile_ci(r, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        stats.percentile_ci([1.0, np.nan])


def test_bootstrap_ci_of_a_normal_mean_matches_the_closed_form():
    x = np.random.default_rng(0).normal(1.0, 2.0, size=2000)
    ci = stats.bootstrap_mean_ci(x, n_boot=2000, rng=np.random.default_rng(1))
    half = 1.959964 * x.std(ddof=1) / np.sqrt(x.size)
    assert ci.estimate == pytest.approx(x.mean())
    assert abs(ci.lo - (x.mean() - half)) < 0.1 * 2 * half
    assert abs(ci.hi - (x.mean() + half)) < 0.1 * 2 * half
    assert ci.replicates.shape == (2000,)
    again = stats.bootstrap_mean_ci(x, n_boot=2000, rng=np.random.default_rng(1))
    assert (again.lo, again.hi) == (ci.lo, ci.hi)  # seeded


def test_bootstrap_ci_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    reps, hits = 400, 0
    for _ in range(reps):
        x = rng.normal(3.0, 1.5, size=100)
        ci = stats.bootstrap_mean_ci(x, n_boot=1000, rng=rng)
        hits += ci.lo <= 3.0 <= ci.hi
    assert 0.93 <= hits / reps <= 0.97


# ---------------------------------------------------------------------------------------------
# Seeds x units


def seeded_groups(tau: float, seeds: int = 5, units: int = 100, seed: int = 3) -> list[np.ndarray]:
    """Per-unit values: unit noise N(0, 1) around seed offsets N(0, tau^2)."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 1.0, size=seeds)
    noise = rng.normal(0.0, 1.0, size=(seeds, units))
    return [tau * offsets[s] + noise[s] for s in range(seeds)]


def test_hierarchical_bootstrap_width_grows_with_between_seed_variance():
    widths = [width(stats.hierarchical_bootstrap(seeded_groups(tau), 2000, rng=4)) for tau in (0.0, 0.5, 2.0)]
    assert widths[0] < widths[1] < widths[2]
    assert widths[2] > 5 * widths[0]
    # Without seed offsets both levels resample the same unit noise: variance 2 sigma^2 / 500 instead of
    # sigma^2 / 500 for 5 x 100 pooled units, i.e. the documented conservative factor sqrt(2) on the width.
    assert widths[0] == pytest.approx(np.sqrt(2) * 2 * 1.96 / np.sqrt(500), rel=0.15)
    groups = [np.array([1.0, 2.0, 3.0]), np.array([10.0])]  # unequal sizes: mean of seed means
    assert stats.hierarchical_bootstrap(groups, 100, rng=0).estimate == pytest.approx(6.0)


def test_paired_bootstrap_of_identical_inputs_is_exactly_zero():
    groups = seeded_groups(1.0)
    est, lo, hi, reps = stats.hierarchical_bootstrap(groups, 500, rng=5, paired_with=[g.copy() for g in groups])
    assert (est, lo, hi) == (0.0, 0.0, 0.0) and not reps.any()
    with pytest.raises(ValueError, match="same seeds and units"):
        stats.hierarchical_bootstrap(groups, 10, paired_with=[g[:-1] for g in groups])


def test_paired_ci_is_narrower_than_unpaired_for_positively_correlated_pairs():
    rng = np.random.default_rng(6)
    base = seeded_groups(1.0, seed=7)  # shared per-unit (image) difficulty and seed effect
    a = [g * 3 + rng.normal(0, 0.3, g.size) for g in base]
    b = [g * 3 + 0.2 + rng.normal(0, 0.3, g.size) for g in base]
    paired = stats.hierarchical_bootstrap(a, 2000, rng=8, paired_with=b)
    ra = stats.hierarchical_bootstrap(a, 2000, rng=9).replicates
    rb = stats.hierarchical_bootstrap(b, 2000, rng=10).replicates
    unpaired = stats.percentile_ci(ra - rb)
    assert paired.estimate == pytest.approx(np.mean([x.mean() - y.mean() for x, y in zip(a, b)]))
    assert paired.hi < 0 < unpaired[1]  # the pairing resolves the -0.2 shift; the unpaired interval does not
    assert width(paired) < 0.2 * (unpaired[1] - unpaired[0])


# ---------------------------------------------------------------------------------------------
# Seeds x bootstrap replicates


def test_combine_replicates_covers_seed_and_sample_variability():
    rng = np.random.default_rng(11)
    same = [rng.normal(10.0, 1.0, 200) for _ in range(4)]
    spread = [rng.normal(10.0 + 4 * k, 1.0, 200) for k in range(4)]
    one = stats.combine_replicates(same[:1], 4000, rng=12)
    assert (one.lo, one.hi) == pytest.approx(stats.percentile_ci(same[0]), abs=0.3)  # one seed: its replicates
    narrow = stats.combine_replicates(same, 4000, rng=13, estimates=[10.0, 10.1, 9.9, 10.0])
    wide = stats.combine_replicates(spread, 4000, rng=13)
    assert narrow.estimate == pytest.approx(10.0)
    assert width(narrow) < width(one) and width(wide) > 3 * width(narrow)
    assert wide.lo < 16.0 < wide.hi


def test_combine_paired_replicates():
    rng = np.random.default_rng(14)
    shared = [rng.normal(20.0 + 3 * k, 2.0, 200) for k in range(3)]  # replicate k of a and b: same resample
    a = [r + 1.0 for r in shared]
    aligned = stats.combine_paired_replicates(a, shared, 2000, rng=15, aligned=True)
    assert aligned.estimate == pytest.approx(1.0) and aligned.lo == pytest.approx(1.0) == aligned.hi
    loose = stats.combine_paired_replicates(a, shared, 2000, rng=15)
    assert loose.lo < 1.0 < loose.hi and width(loose) > 1.0  # independent draws: sample noise of both
    zero = stats.combine_paired_replicates(shared, shared, 500, rng=16, aligned=True)
    assert (zero.estimate, zero.lo, zero.hi) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds"):
        stats.combine_paired_replicates(a, shared[:2])


# ---------------------------------------------------------------------------------------------
# FID against a fixed reference


def gaussian_pair(d: int = 6, seed: int = 17):
    """Two Gaussians with non-commuting full covariances."""
    rng = np.random.default_rng(seed)
    g1, g2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = g1 @ g1.T / d + 0.5 * np.eye(d), g2 @ g2.T / d + 0.2 * np.eye(d)
    return rng.normal(size=d), s1, rng.normal(size=d) * 0.5, s2


def closed_form_fid(mu1, s1, mu2, s2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^(1/2) S2 S1^(1/2))^(1/2)) (symmetric form, scipy sqrtm)."""
    r1 = scipy.linalg.sqrtm(s1).real
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * cross))


def test_frechet_reference_equals_fid_from_stats():
    mu1, s1, mu2, s2 = gaussian_pair()
    rng = np.random.default_rng(18)
    ref = fid.FrechetReference.from_stats((mu2, s2))
    for n in (4, 50):  # n < D (Gram of the samples) and n > D
        x = rng.multivariate_normal(mu1, s1, size=n)
        assert ref.fid(x) == pytest.approx(fid.fid_from_stats(fid.stats_from_features(x), (mu2, s2)), rel=1e-8)
    # A singular reference (fewer reference images than dimensions) is handled too.
    y = rng.multivariate_normal(mu2, s2, size=4)
    singular = fid.stats_from_features(y)
    x = rng.multivariate_normal(mu1, s1, size=30)
    assert fid.FrechetReference.from_stats(singular).fid(x) == pytest.approx(
        fid.fid_from_stats(fid.stats_from_features(x), singular), rel=1e-6)


def test_fid_bootstrap_centres_on_the_full_set_fid_of_two_gaussians():
    mu1, s1, mu2, s2 = gaussian_pair()
    truth = closed_form_fid(mu1, s1, mu2, s2)
    diag = closed_form_fid(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([4.0, 9.0]))
    assert diag == pytest.approx(2 + (1 - 2) ** 2 + (2 - 3) ** 2)  # the closed form itself, diagonal case
    rng = np.random.default_rng(19)
    big = rng.multivariate_normal(mu1, s1, size=100_000)
    ref = fid.FrechetReference.from_stats((mu2, s2))
    assert ref.fid(big) == pytest.approx(truth, rel=0.02)
    x = big[:2000]
    full = ref.fid(x)
    reps = stats.fid_bootstrap(x, mu2, s2, n_boot=200, rng=np.random.default_rng(20))
    assert reps.shape == (200,)
    assert np.median(reps) == pytest.approx(full, rel=0.03)
    lo, hi = stats.percentile_ci(reps)
    assert lo < truth < hi + np.trace(s1) / x.shape[0]  # replicates sit ~tr(S1)/n above the full-set value
    again = stats.fid_bootstrap(x, mu2, s2, n_boot=200, rng=np.random.default_rng(20))
    np.testing.assert_array_equal(reps, again)


# ---------------------------------------------------------------------------------------------
# KID


def test_kid_near_zero_for_one_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(21)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    mean, std = stats.kid(a, b, num_subsets=50, rng=22)
    shifted, shifted_std = stats.kid(a, b + 0.5, num_subsets=50, rng=22)
    # The subsets share the two sets, so the mean's error is of the order of one subset's std (not std / sqrt(50)).
    assert std > 0 and abs(mean) < 3 * std
    assert shifted > 20 * std and shifted > 3 * shifted_std
    assert stats.kid_subset_size(400, 1000) == 200 and stats.kid_subset_size(5000, 3000) == 1000


def test_kid_refuses_subsets_as_large_as_a_set():
    a = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"subset_size < min\(n_a, n_b\) = 10, got 10"):
        stats.kid(a, np.ones((20, 3)), subset_size=10)
    with pytest.raises(ValueError, match="at least 4 samples"):
        stats.kid(a[:3], a)


def test_kid_subset_mmd_equals_torch_fidelity():
    from torch_fidelity.metric_kid import kernel_mmd

    rng = np.random.default_rng(23)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.3, 1.2, size=(30, 5))
    theirs = kernel_mmd(x, y, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                        kid_kernel_poly_coef0=1)
    assert stats.mmd2_unbiased(x, y) == pytest.approx(float(theirs), rel=1e-10)
