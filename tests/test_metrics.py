"""Tests of eval.metrics (SSIM, MSE, LPIPS protocol of PDAE Table 1, official PDAE metric/utils.py) and the
distance side of eval.backends (LPIPS-AlexNet named "lpips", the domain feature distance named "feat_dist")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage
from skimage.metrics import structural_similarity

from eval import backends, metrics


def smooth_images(n: int, c: int, size: int, seed: int) -> torch.Tensor:
    """Random smooth images in [0, 1]  # [n, c, size, size] float64 (blurred noise, rescaled per image)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, size, size, generator=g, dtype=torch.float64)
    k = metrics.gaussian_window(9, 2.0)
    kernel = torch.outer(k, k).expand(c, 1, 9, 9)
    x = F.conv2d(F.pad(x, (4, 4, 4, 4), mode="circular"), kernel, groups=c)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo)


# ---------------------------------------------------------------------------------------------
# MSE


def test_mse_zero_on_identical_and_golden_value():
    x = smooth_images(3, 3, 8, seed=0)
    assert torch.equal(metrics.mse(x, x), torch.zeros(3, dtype=torch.float64))
    a = torch.zeros(2, 1, 4, 4)
    b = torch.zeros(2, 1, 4, 4)
    b[0] = 0.5  # every pixel off by 0.5 -> 0.25
    b[1, 0, 0, 0] = 1.0  # one pixel of 16 off by 1 -> 1/16
    assert torch.allclose(metrics.mse(a, b), torch.tensor([0.25, 1 / 16], dtype=torch.float64))


def test_mse_on_unit_range_is_quarter_of_mse_on_model_range():
    a, b = smooth_images(2, 3, 8, seed=1), smooth_images(2, 3, 8, seed=2)
    a_model, b_model = 2 * a - 1, 2 * b - 1
    assert torch.allclose(metrics.mse(metrics.to_unit(a_model), metrics.to_unit(b_model)) * 4,
                          (a_model - b_model).pow(2).mean(dim=(1, 2, 3)))


# ---------------------------------------------------------------------------------------------
# SSIM


def test_gaussian_window_values():
    g = metrics.gaussian_window()
    raw = torch.tensor([math.exp(-(k - 5) ** 2 / 4.5) for k in range(11)], dtype=torch.float64)
    assert torch.allclose(g, raw / raw.sum(), atol=0, rtol=1e-15)
    assert g.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert g[5].item() == pytest.approx(0.26601172486, abs=1e-10)


def test_ssim_identical_is_one():
    x = smooth_images(4, 3, 16, seed=3)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(4, dtype=torch.float64), atol=1e-12)


def test_ssim_decreases_with_noise():
    x = smooth_images(3, 3, 32, seed=4)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    scores = [metrics.ssim(x, (x + s * noise).clamp(0, 1)) for s in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)]
    for before, after in zip(scores, scores[1:]):
        assert (after < before).all()
    assert scores[-1].max() < 0.5


def test_ssim_map_matches_scikit_image_in_the_interior():
    # Away from a 5-px border the zero padding is never touched, so the map must equal
    # scikit-image's Gaussian-weighted SSIM (population covariance, data range 1).
    a = smooth_images(1, 3, 64, seed=6)
    noise = torch.rand(a.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    b = 0.5 * a + 0.3 * smooth_images(1, 3, 64, seed=8) + 0.2 * noise
    ours = metrics.ssim_map(a, b)[0].numpy()
    _, theirs = structural_similarity(a[0].numpy(), b[0].numpy(), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1, channel_axis=0, full=True)
    assert theirs.shape == ours.shape == (3, 64, 64)
    interior = (slice(None), slice(5, -5), slice(5, -5))
    np.testing.assert_allclose(ours[interior], theirs[interior], rtol=0, atol=1e-6)
    assert 0.3 < ours.mean() < 0.99  # a non-trivial pair
    # At the border the protocol's zero padding differs from scikit-image's reflection.
    assert np.abs(ours[:, 0, :] - theirs[:, 0, :]).max() > 1e-3


def independent_ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map of one channel pair [H, W] in [0, 1], written from the convention alone (numpy / scipy only):
    11x11 Gaussian window (sigma 1.5) built here, zero padding ('constant', cval 0) with 'same' output,
    biased window-weighted moments, C1 = 0.01^2, C2 = 0.03^2."""
    k = np.arange(11) - 5
    g = np.exp(-(k**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def local_mean(x: np.ndarray) -> np.ndarray:
        return ndimage.correlate(x, window, mode="constant", cval=0.0)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a, var_b = local_mean(a * a) - mu_a**2, local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 3, 23, 17)])
def test_ssim_full_map_matches_an_independent_zero_padded_implementation(shape):
    # Every pixel, borders included: the zero-padding convention of the official code, re-derived with scipy.
    rng = np.random.default_rng(sum(shape))
    a = rng.random(shape)
    b = np.clip(0.6 * a + 0.4 * rng.random(shape), 0, 1)
    ours = metrics.ssim_map(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    theirs = np.stack([np.stack([independent_ssim_map(a[n, c], b[n, c]) for c in range(shape[1])])
                       for n in range(shape[0])])
    assert ours.shape == theirs.shape == shape
    assert np.abs(ours - theirs).max() < 1e-6
    np.testing.assert_allclose(metrics.ssim(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
                               theirs.mean(axis=(1, 2, 3)), rtol=0, atol=1e-6)
    # Unrelated random images still score clearly above 0 at the border (zero padding is shared by both).
    unrelated = metrics.ssim_map(torch.from_numpy(a), torch.from_numpy(rng.random(shape))).numpy()
    assert unrelated[..., 0, 0].mean() > unrelated[..., 8, 8].mean()


def test_ssim_full_map_matches_scikit_image_on_explicitly_zero_padded_inputs():
    # scikit-image reflects at the border; padding the inputs with 5 zeros first makes every window of an original
    # pixel see exactly the zeros of our convention, so the whole cropped map must agree.
    a = smooth_images(1, 3, 16, seed=40)[0].numpy()
    b = (0.5 * a + 0.5 * smooth_images(1, 3, 16, seed=41)[0].numpy())
    pad = ((0, 0), (5, 5), (5, 5))
    _, theirs = structural_similarity(np.pad(a, pad), np.pad(b, pad), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1, channel_axis=0, full=True)
    ours = metrics.ssim_map(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0].numpy()
    np.testing.assert_allclose(ours, theirs[:, 5:-5, 5:-5], rtol=0, atol=1e-6)


def test_ssim_hand_computed_single_pixel():
    # A 1x1 image sees only the window centre w0 = g[5]^2; everything else is zero padding:
    # mu = w0 x, sigma^2 = w0 x^2 - w0^2 x^2, sigma_ab = w0 x y - w0^2 x y.
    x, y = 0.8, 0.3
    w0 = (1 / sum(math.exp(-(k**2) / 4.5) for k in range(-5, 6))) ** 2
    c1, c2 = 0.01**2, 0.03**2
    v = w0 * (1 - w0)
    expected = ((2 * w0**2 * x * y + c1) * (2 * v * x * y + c2)) / (
        (w0**2 * (x * x + y * y) + c1) * (v * (x * x + y * y) + c2))
    got = metrics.ssim(torch.tensor([[[[x]]]], dtype=torch.float64), torch.tensor([[[[y]]]], dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.442549507, abs=1e-9)  # golden value of the formula itself


def test_ssim_hand_computed_constant_images_centre_and_corner():
    c_a, c_b = 0.8, 0.3
    a = torch.full((1, 1, 32, 32), c_a, dtype=torch.float64)
    b = torch.full((1, 1, 32, 32), c_b, dtype=torch.float64)
    m = metrics.ssim_map(a, b)[0, 0]
    c1, c2 = 0.01**2, 0.03**2
    # Interior: no variance, luminance term only.
    assert m[16, 16].item() == pytest.approx((2 * c_a * c_b + c1) / (c_a**2 + c_b**2 + c1), rel=1e-12)
    # Corner: the window's quadrant of total weight w lies inside the image, the rest is zeros.
    g = metrics.gaussian_window()
    w = float(g[5:].sum()) ** 2
    v = w * (1 - w)
    corner = ((2 * w * w * c_a * c_b + c1) * (2 * v * c_a * c_b + c2)) / (
        (w * w * (c_a**2 + c_b**2) + c1) * (v * (c_a**2 + c_b**2) + c2))
    assert m[0, 0].item() == pytest.approx(corner, rel=1e-12)
    assert metrics.ssim(a, b).item() == pytest.approx(m.mean().item(), rel=1e-12)


def test_ssim_is_mean_over_channels_of_per_channel_ssim():
    a, b = smooth_images(2, 3, 16, seed=8), smooth_images(2, 3, 16, seed=9)
    per_channel = torch.stack([metrics.ssim(a[:, c:c + 1], b[:, c:c + 1]) for c in range(3)], dim=1)
    assert torch.allclose(metrics.ssim(a, b), per_channel.mean(dim=1), atol=1e-14)


def test_ssim_per_image_independent_of_batch():
    a, b = smooth_images(3, 3, 16, seed=10), smooth_images(3, 3, 16, seed=11)
    together = metrics.ssim(a, b)
    alone = torch.cat([metrics.ssim(a[i:i + 1], b[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Range contract


def test_range_assertion_fires_for_model_range_input():
    x = smooth_images(2, 3, 16, seed=12) * 2 - 1  # [-1, 1]
    with pytest.raises(ValueError, match=r"^a must lie in \[0, 1\].*spans \[-1") as info:
        metrics.ssim(x, x)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^b must lie in \[0, 1\]"):
        metrics.mse(metrics.to_unit(x), x)


def test_range_tolerance_allows_tiny_overshoot_only():
    x = smooth_images(1, 1, 12, seed=13)
    over = x.clone()
    over[0, 0, 0, 0] = 1 + 0.5 * metrics.RANGE_TOLERANCE
    assert metrics.ssim(over, x).shape == (1,)
    over[0, 0, 0, 0] = 1 + 2 * metrics.RANGE_TOLERANCE
    with pytest.raises(ValueError, match="must lie in"):
        metrics.ssim(over, x)
    nan = x.clone()
    nan[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metrics.mse(nan, x)


def test_shape_mismatch_is_one_line_error():
    with pytest.raises(ValueError, match="equal shape"):
        metrics.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        metrics.mse(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_to_unit():
    assert torch.equal(metrics.to_unit(torch.tensor([-1.0, 0.0, 1.0, 1.5])), torch.tensor([0.0, 0.5, 1.0, 1.25]))


# ---------------------------------------------------------------------------------------------
# LPIPS contract and the standard LPIPS-AlexNet


def test_lpips_distance_contract():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    d = metrics.lpips_distance(a, b, lambda x, y: (x - y).abs().mean(dim=(1, 2, 3), keepdim=True))
    assert d.dtype == torch.float64 and torch.allclose(d, torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^a must lie in \[-1, 1\]"):
        metrics.lpips_distance(b * 255, a, lambda x, y: x.mean())
    with pytest.raises(ValueError, match="one value per image"):
        metrics.lpips_distance(a, b, lambda x, y: x.mean())


def test_per_image_fields_mean_values_and_units():
    fields = metrics.per_image_fields(torch.tensor([0.25, 0.5, 1.0], dtype=torch.float32))
    assert fields["units"] == "images" and fields["values"] == [0.25, 0.5, 1.0]
    assert fields["value"] == pytest.approx(np.mean(fields["values"]), rel=1e-15)
    assert all(type(v) is float for v in fields["values"])
    with pytest.raises(ValueError, match="empty"):
        metrics.per_image_fields(torch.zeros(0))


def test_mean_and_sem():
    mean, sem = metrics.mean_and_sem(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and sem == pytest.approx(math.sqrt(5 / 3) / 2)


@pytest.fixture(scope="module")
def alexnet_cache(tmp_path_factory):
    """A TORCH_HOME whose hub/checkpoints holds a random-init torchvision AlexNet under the real file name."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.alexnet().state_dict()
    torch.save(state, home / "hub" / "checkpoints" / backends.ALEXNET_FILE)
    return home, state


def _forbid_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_standard_lpips_loads_local_alexnet_and_matches_lpips_package(alexnet_cache, monkeypatch):
    import lpips

    home, state = alexnet_cache
    monkeypatch.setenv("TORCH_HOME", str(home))
    with monkeypatch.context() as m:
        _forbid_downloads(m)
        rng_before = torch.get_rng_state()
        net = backends.alexnet_lpips()
        assert torch.equal(torch.get_rng_state(), rng_before)  # construction leaves the global RNG alone
    # The trunk holds exactly the file's weights (slice k keeps torchvision's feature index).
    trunk = net.lpips.net.state_dict()
    assert torch.equal(trunk["slice1.0.weight"], state["features.0.weight"])
    assert torch.equal(trunk["slice5.10.bias"], state["features.10.bias"])
    assert len(trunk) == len([k for k in state if k.startswith("features.")])
    # Independent path: the lpips package building AlexNet through torchvision from the same cache.
    reference = lpips.LPIPS(net="alex", verbose=False).eval()
    a = smooth_images(3, 3, 32, seed=20).float() * 2 - 1
    b = smooth_images(3, 3, 32, seed=21).float() * 2 - 1
    backend = backends.MetricBackend("standard", net, backends.STANDARD_FEATURE_EXTRACTOR)
    assert backend.distance_name == "lpips" and backend.distance_label == "LPIPS-AlexNet distance"
    d = backend.distance(a, b)
    with torch.no_grad():
        expected = reference(a, b).reshape(3).double()
    assert torch.allclose(d, expected, rtol=1e-6, atol=1e-9)
    assert (d > 0).all()
    assert torch.allclose(backend.lpips(a, a), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    # Greyscale images are repeated to RGB.
    grey_a, grey_b = a[:, :1], b[:, :1]
    assert torch.allclose(backend.lpips(grey_a, grey_b), backend.lpips(grey_a.expand(-1, 3, -1, -1),
                                                                      grey_b.expand(-1, 3, -1, -1)))


def test_standard_backend_reports_lpips_under_its_own_name(monkeypatch, tmp_path):
    # Weight lookup and loading are stubbed: only the naming of the standard backend's distance is under test.
    monkeypatch.setattr(backends, "find_weights", lambda *args: tmp_path / "w.pth")
    monkeypatch.setattr(backends, "alexnet_lpips", lambda path=None: nn.Identity())
    monkeypatch.setattr(backends, "inception_weights_path", lambda path=None: tmp_path / "i.pth")
    backend = backends.standard_backend()
    assert backend.name == "standard" and backend.distance_name == "lpips"


def test_missing_alexnet_weights_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _forbid_downloads(monkeypatch)
    with pytest.raises(backends.MissingWeightsError) as info:
        backends.alexnet_lpips()
    message = str(info.value)
    assert "\n" not in message
    assert backends.ALEXNET_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "alexnet_weights" in message
    with pytest.raises(backends.MissingWeightsError, match=r"nowhere\.pth \(set by alexnet_weights\)"):
        backends.alexnet_lpips(tmp_path / "nowhere.pth")


class _NotAStateDict:
    """A pickled object that weights_only loading must refuse."""


def test_unsafe_or_wrong_weight_files_are_refused(tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"features.0.weight": _NotAStateDict()}, unsafe)
    with pytest.raises(backends.WeightsFileError, match="weights_only=True") as info:
        backends.alexnet_lpips(unsafe)
    assert "\n" not in str(info.value)
    wrong = tmp_path / "wrong.pth"
    torch.save(nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(backends.WeightsFileError, match="not an AlexNet state dict"):
        backends.alexnet_lpips(wrong)


# ---------------------------------------------------------------------------------------------
# Domain LPIPS-style distance


class StandInFeatureNet(nn.Module):
    """Tiny stand-in with the FeatureNet interface: features(x) -> [N, D], feature_maps(x) -> list of maps."""

    def __init__(self, image_size: int = 16, in_channels: int = 3, feature_dim: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.image_size, self.in_channels = image_size, in_channels
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 6, 3, 1, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(6, 10, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(10, feature_dim)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = self.stage1(x)
        return [h1, self.stage2(h1)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_maps(x)[-1].mean(dim=(2, 3)))


def test_feature_map_distance_matches_hand_computation():
    g = torch.Generator().manual_seed(30)
    maps_a = [torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    maps_b = [torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    expected = np.zeros(2)
    for fa, fb in zip(maps_a, maps_b):
        ua = fa.double().numpy() / np.linalg.norm(fa.double().numpy(), axis=1, keepdims=True)
        ub = fb.double().numpy() / np.linalg.norm(fb.double().numpy(), axis=1, keepdims=True)
        expected += ((ua - ub) ** 2).sum(axis=1).mean(axis=(1, 2)) / 2
    np.testing.assert_allclose(backends.feature_map_distance(maps_a, maps_b).numpy(), expected, rtol=1e-8)
    # Opposite unit vectors are at squared distance 4, the maximum.
    f = torch.ones(1, 3, 2, 2)
    assert backends.feature_map_distance([f], [-f]).item() == pytest.approx(4.0, rel=1e-8)


def test_domain_feature_distance_zero_on_identical_and_grows_with_noise():
    backend = backends.domain_backend(StandInFeatureNet())
    assert backend.name == "domain"
    # Not LPIPS: its own metric name and label.
    assert backend.distance_name == "feat_dist" and backend.distance_label == "domain feature distance"
    x = smooth_images(4, 3, 16, seed=31).float() * 2 - 1
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(32))
    assert torch.allclose(backend.lpips(x, x), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    scores = [backend.distance(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.05, 0.2, 0.8)]
    assert scores[0] < scores[1] < scores[2]
    assert torch.equal(backend.lpips(x, -x), backend.distance(x, -x))  # the old method name is an alias


def test_domain_backend_requires_the_interface():
    with pytest.raises(ValueError, match="no attribute 'in_channels'; pass in_channels"):
        backends.domain_backend(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="lacks the method features"):
        backends.domain_backend(nn.Linear(2, 2), in_channels=3, image_size=8)
