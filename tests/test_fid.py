"""Tests of eval.fid (FID / KID through torch-fidelity, statistics files) and the FID side of eval.backends."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval import backends, fid, stats


class StandInFeatureNet(nn.Module):
    """Seeded random stand-in with the FeatureNet interface: features(x) -> [N, D], feature_maps(x) -> maps."""

    def __init__(self, image_size: int = 16, in_channels: int = 3, feature_dim: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.image_size, self.in_channels = image_size, in_channels
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 1, 1), nn.Tanh())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.Tanh())
        self.head = nn.Linear(16 * (image_size // 2) ** 2, feature_dim)
        nn.init.normal_(self.head.weight, std=0.3)  # features of order 1, so KID's cubic kernel is not flat

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = self.stage1(x)
        return [h1, self.stage2(h1)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_maps(x)[-1].flatten(1))


def smooth_images(n: int, c: int, size: int, seed: int) -> torch.Tensor:
    """Random smooth images in [-1, 1]  # [n, c, size, size] float32."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, size, size, generator=g)
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), 3, 1)
    return (x / x.abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(-1, 1)


def add_noise(x: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    return (x + scale * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)


@pytest.fixture(scope="module")
def domain():
    return backends.domain_backend(StandInFeatureNet())


@pytest.fixture(scope="module")
def images():
    return fid.to_uint8(smooth_images(200, 3, 16, seed=1)), fid.to_uint8(smooth_images(200, 3, 16, seed=2))


# ---------------------------------------------------------------------------------------------
# Fréchet distance from statistics


def test_fid_from_stats_closed_forms():
    # Diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert fid.fid_from_stats((mu1, np.diag(a)), (mu2, np.diag(b))) == pytest.approx(expected, rel=1e-10)
    # Equal full covariances: only the mean term remains.
    g = np.random.default_rng(0).standard_normal((5, 5))
    sigma = g @ g.T + np.eye(5)
    assert fid.fid_from_stats((mu1[:1].repeat(5), sigma), (np.zeros(5), sigma)) == pytest.approx(0.0, abs=1e-9)
    # Rotation invariance: rotating both Gaussians leaves the distance unchanged.
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    rotated = fid.fid_from_stats((q @ mu1, q @ np.diag(a) @ q.T), (q @ mu2, q @ np.diag(b) @ q.T))
    assert rotated == pytest.approx(expected, rel=1e-8)


def test_stats_from_features_is_mean_and_unbiased_covariance():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = fid.stats_from_features(x)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])
    with pytest.raises(ValueError, match="N >= 2"):
        fid.stats_from_features(x[:1])


# ---------------------------------------------------------------------------------------------
# FID and KID through torch-fidelity with the domain backend


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(domain, images):
    a, b = images
    same = fid.compute_fid(a, a, domain, kid=False, cuda=False)
    assert abs(same["fid"]) < 1e-8
    assert same["backend"] == "domain" and same["feature_extractor"].startswith(backends.DOMAIN_EXTRACTOR_PREFIX)
    assert same["num_images_a"] == same["num_images_b"] == 200 and "kid_mean" not in same
    x = smooth_images(200, 3, 16, seed=1)
    fids, kids = [], []
    for scale in (0.05, 0.15, 0.4, 1.0):
        r = fid.compute_fid(a, fid.to_uint8(add_noise(x, scale, seed=3)), domain, kid_subsets=10, cuda=False)
        fids.append(r["fid"])
        kids.append(r["kid_mean"])
    assert 0 < fids[0] < fids[1] < fids[2] < fids[3]
    assert 0 < kids[2] < kids[3]


def test_kid_is_near_zero_for_independent_sets_of_one_distribution(domain, images):
    a, b = images
    r = fid.compute_fid(a, b, domain, kid=True, kid_subset_size=100, kid_subsets=50, cuda=False)
    assert r["kid_subset_size"] == 100 and r["kid_subsets"] == 50 and r["kid_std"] > 0
    noisy = fid.compute_fid(a, fid.to_uint8(add_noise(b.float() / 127.5 - 1, 1.0, seed=3)), domain,
                            kid_subset_size=100, kid_subsets=50, cuda=False)
    assert abs(r["kid_mean"]) < 3 * r["kid_std"] and abs(r["kid_mean"]) < noisy["kid_mean"] / 20


def test_torch_fidelity_fid_equals_independent_fid_from_stats(domain, images):
    a, b = images
    b = fid.to_uint8(add_noise(b.float() / 127.5 - 1, 0.3, seed=4))
    theirs = fid.compute_fid(a, b, domain, kid=False, cuda=False)["fid"]
    ours = fid.fid_from_stats(fid.feature_stats(a, domain, cuda=False), fid.feature_stats(b, domain, cuda=False))
    assert theirs > 1e-3
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_bootstrap_replicates_and_kid_subsets(domain, images):
    a, b = images
    noisy = fid.to_uint8(add_noise(b.float() / 127.5 - 1, 0.4, seed=7))
    r = fid.compute_fid(a, noisy, domain, kid=True, kid_subsets=20, cuda=False, bootstrap=50, bootstrap_seed=3)
    plain = fid.compute_fid(a, noisy, domain, kid=False, cuda=False)
    reps = np.array(r["fid_replicates"])
    assert r["fid"] == plain["fid"] and reps.shape == (50,)  # the value is the full-set FID, unchanged
    assert np.median(reps) == pytest.approx(r["fid"], rel=0.2) and reps.std() > 0
    # Replicates are FIDs of resampled features against the fixed reference, with the seeded indices.
    features_a = fid.extract_features(a, domain, cuda=False)
    mu_b, sigma_b = fid.feature_stats(noisy, domain, cuda=False)
    idx = stats.bootstrap_indices(len(features_a), 50, np.random.default_rng(3))
    for k in (0, 49):
        expected = fid.fid_from_stats(fid.stats_from_features(features_a[idx[k]]), (mu_b, sigma_b))
        assert reps[k] == pytest.approx(expected, rel=1e-6)
    # KID: default subset min(1000, n // 2) < n, so the subsets differ; a subset of a whole set is refused.
    assert r["kid_subset_size"] == 100 and r["kid_std"] > 0
    with pytest.raises(ValueError, match=r"kid_subset_size must satisfy 2 <= size < min\(N_a, N_b\) = 200"):
        fid.compute_fid(a, noisy, domain, kid_subset_size=200, cuda=False)
    rows = fid.fid_records({"method": "m"}, r, table="t", steps=5)
    assert [row["metric"] for row in rows] == ["fid", "kid"]
    assert rows[0]["values"] == r["fid_replicates"] and rows[0]["units"] == "bootstrap"
    assert rows[0]["n_samples"] == rows[1]["n_samples"] == 200 and rows[1]["kid_subset"] == 100
    assert rows[0]["value"] == r["fid"] and rows[1]["value"] == r["kid_mean"] and "values" not in rows[1]
    assert "values" not in fid.fid_records({}, plain)[0]


def test_extractor_sees_the_net_on_quantised_model_range_images(domain):
    net = StandInFeatureNet()
    x = smooth_images(6, 3, 16, seed=5)
    got = fid.extract_features(x, domain, batch_size=4, cuda=False)  # float input is quantised like a PNG
    with torch.no_grad():
        expected = net.features(fid.to_uint8(x).float() / 127.5 - 1).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(got - expected).max() < np.abs(expected).max() * 1e-4


def test_greyscale_images_and_networks():
    grey_net = StandInFeatureNet(in_channels=1, seed=7)
    backend = backends.domain_backend(grey_net)
    x = smooth_images(5, 1, 16, seed=8)
    u8 = fid.to_uint8(x)
    assert torch.equal(fid.Uint8Images(u8)[2], u8[2].expand(3, -1, -1))  # repeated to RGB for torch-fidelity
    got = fid.extract_features(u8, backend, cuda=False)
    with torch.no_grad():
        expected = grey_net.features(u8.float() / 127.5 - 1).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_registration_names_follow_the_weights():
    first = backends.domain_backend(StandInFeatureNet(seed=0)).feature_extractor
    again = backends.domain_backend(StandInFeatureNet(seed=0)).feature_extractor
    other = backends.domain_backend(StandInFeatureNet(seed=1)).feature_extractor
    assert first == again != other


def test_input_validation_is_one_line():
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]"):
        fid.Uint8Images(torch.rand(2, 3, 8, 8) * 2)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        fid.Uint8Images(torch.zeros(2, 2, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="takes 16x16 images, got 8x8"):
        fid.extract_features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
                             backends.domain_backend(StandInFeatureNet()), cuda=False)
    pairs = torch.utils.data.TensorDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))  # (image, label) items
    assert torch.equal(fid.Uint8Images(pairs)[1], torch.full((3, 4, 4), 128, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"^image 0 must lie in \[-1, 1\]"):
        fid.Uint8Images(torch.utils.data.TensorDataset(torch.full((2, 1, 4, 4), 3.0)))[0]
    assert torch.equal(fid.to_uint8(torch.tensor([-1.0, -0.999, 0.0, 1.0, 1.2])),
                       torch.tensor([0, 0, 128, 255, 255], dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# Statistics files


def test_reference_stats_file_round_trip_gives_the_same_fid_and_kid(domain, images, tmp_path):
    a, b = images
    b = fid.to_uint8(add_noise(b.float() / 127.5 - 1, 0.2, seed=6))
    path = tmp_path / "ref" / "stats.npz"
    stats = fid.compute_reference_stats(b, domain, path, meta={"dataset": "synthetic"}, cuda=False)
    loaded = fid.load_stats(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.meta["dataset"] == "synthetic" and loaded.meta["num_images"] == 200
    assert loaded.features.shape == (200, 8) and loaded.features.dtype == np.float32
    direct = fid.compute_fid(a, b, domain, kid_subsets=20, cuda=False)
    from_file = fid.compute_fid(a, path, domain, kid_subsets=20, cuda=False)
    assert from_file["reference"] == str(path)
    assert from_file["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert from_file["kid_mean"] == pytest.approx(direct["kid_mean"], rel=1e-4)
    assert fid.fid_from_stats(fid.feature_stats(a, domain, cuda=False), loaded) == pytest.approx(direct["fid"], rel=1e-6)


def test_stats_file_errors_are_one_line(domain, images, tmp_path):
    a, _ = images
    missing = tmp_path / "missing.npz"
    with pytest.raises(fid.StatsFileError, match="does not exist") as info:
        fid.load_stats(missing)
    assert "\n" not in str(info.value) and str(missing) in str(info.value)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(fid.StatsFileError, match="is corrupt") as info:
        fid.load_stats(corrupt)
    assert "\n" not in str(info.value)
    partial = tmp_path / "partial.npz"
    np.savez(partial, mu=np.zeros(3))
    with pytest.raises(fid.StatsFileError, match="lacks sigma, meta"):
        fid.load_stats(partial)
    # Statistics of another network, or without the features KID needs, are refused.
    other = backends.domain_backend(StandInFeatureNet(seed=3))
    foreign = tmp_path / "foreign.npz"
    fid.compute_reference_stats(a, other, foreign, cuda=False)
    with pytest.raises(fid.StatsFileError, match="was made with feature_extractor="):
        fid.compute_fid(a, foreign, domain, cuda=False)
    no_features = tmp_path / "no_features.npz"
    fid.compute_reference_stats(a, domain, no_features, keep_features=False, cuda=False)
    with pytest.raises(fid.StatsFileError, match="holds no features"):
        fid.compute_fid(a, no_features, domain, kid=True, cuda=False)
    assert abs(fid.compute_fid(a, no_features, domain, kid=False, cuda=False)["fid"]) < 1e-8


# ---------------------------------------------------------------------------------------------
# Standard backend from locally generated weight files


def random_inception_state_dict(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """A random state dict of torch-fidelity's FeatureExtractorInceptionV3 (shapes from a meta-device build)."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with monkeypatch.context() as m:
        m.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        m.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, strict=True: None)
        with torch.device("meta"):
            meta_net = inception.FeatureExtractorInceptionV3("x", ["64"])
        shapes = {k: (v.shape, v.dtype) for k, v in meta_net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, (shape, dtype) in shapes.items():
        if key.endswith("running_var") or key.endswith("bn.weight"):
            state[key] = torch.ones(shape, dtype=dtype)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=dtype)
        elif key.endswith("conv.weight") or key.endswith("fc.weight"):
            state[key] = torch.randn(shape, generator=g, dtype=dtype) * 0.1
        else:
            state[key] = torch.zeros(shape, dtype=dtype)
    return state


@pytest.fixture(scope="module")
def standard_cache(tmp_path_factory):
    """A TORCH_HOME with random-init AlexNet and Inception weights under the real cache file names."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")},
               checkpoints / backends.ALEXNET_FILE)
    with pytest.MonkeyPatch.context() as m:
        state = random_inception_state_dict(m)
    torch.save(state, checkpoints / backends.INCEPTION_FILE)
    return home, state


def test_standard_backend_runs_fid_through_torch_fidelity_inception(standard_cache, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as inception
    from torch_fidelity.utils import create_feature_extractor

    home, state = standard_cache
    monkeypatch.setenv("TORCH_HOME", str(home))

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(inception, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    backend = backends.standard_backend()
    assert backend.feature_extractor == "inception-v3-compat" and backend.feature_layer() == "2048"
    weights = backend.fidelity_kwargs["feature_extractor_weights_path"]
    assert weights == str(home / "hub" / "checkpoints" / backends.INCEPTION_FILE)
    # torch-fidelity's extractor, built from the backend's kwargs, holds the file's weights.
    extractor = create_feature_extractor("inception-v3-compat", ["64"], cuda=False, verbose=False, **backend.fidelity_kwargs)
    assert torch.equal(extractor.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    # End to end on 6 tiny images per set, with the 64-d Inception layer (2048-d needs thousands of images).
    small = dataclasses.replace(backend, fid_layer="64")
    a = fid.to_uint8(smooth_images(6, 3, 16, seed=10))
    b = fid.to_uint8(smooth_images(6, 3, 16, seed=11))
    result = fid.compute_fid(a, b, small, kid=True, kid_subsets=5, cuda=False)
    assert result["feature_layer"] == "64" and result["kid_subset_size"] == 3  # 6 // 2: subsets smaller than n
    assert np.isfinite(result["fid"]) and np.isfinite(result["kid_mean"])
    independent = fid.fid_from_stats(fid.feature_stats(a, small, cuda=False), fid.feature_stats(b, small, cuda=False))
    assert independent == pytest.approx(result["fid"], rel=1e-4, abs=1e-6)


def test_missing_inception_weights_is_one_line_error(standard_cache, tmp_path, monkeypatch):
    home, _ = standard_cache
    monkeypatch.setenv("TORCH_HOME", str(home))
    with pytest.raises(backends.MissingWeightsError) as info:
        backends.standard_backend(inception_weights=tmp_path / "inception.pth")
    message = str(info.value)
    assert "\n" not in message
    assert backends.INCEPTION_FILE in message and str(tmp_path / "inception.pth") in message
    assert "inception_weights" in message and "TORCH_HOME" in message
    # An empty cache names the first missing file and where it was looked for.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(backends.MissingWeightsError, match=backends.ALEXNET_FILE):
        backends.standard_backend()
    with pytest.raises(backends.MissingWeightsError, match=f"{backends.INCEPTION_FILE} not found in {tmp_path}"):
        backends.standard_backend(alexnet_weights=home / "hub" / "checkpoints" / backends.ALEXNET_FILE)


def test_inception_file_of_another_architecture_is_refused(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, wrong)
    with pytest.raises(backends.WeightsFileError, match="not torch-fidelity's FeatureExtractorInceptionV3"):
        backends.inception_weights_path(wrong)
