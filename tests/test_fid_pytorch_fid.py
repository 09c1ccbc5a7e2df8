"""The pytorch-fid FID backend (eval.fid_inception, eval.backends.with_fid_backend): Fréchet distance, preprocessing
and architecture against pytorch-fid itself (random weights with its key names; nothing is downloaded)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval import backends, fid, fid_inception
from eval.cli import main as eval_main

pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")
pytorch_fid_score = pytest.importorskip("pytorch_fid.fid_score")


def random_stats(d: int, n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of n correlated Gaussian features [n, d] (singular when n <= d)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / math.sqrt(d) + shift
    return x.mean(axis=0), np.cov(x, rowvar=False)


def independent_fid(mu1, s1, mu2, s2) -> float:
    """||mu_1 - mu_2||^2 + tr(s1 + s2 - 2 (s1 s2)^(1/2)), written out with scipy's sqrtm."""
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# ---------------------------------------------------------------------------------------------
# (a) Fréchet distance


@pytest.mark.parametrize("d, n", [(32, 400), (64, 20)])  # full-rank and singular products
def test_frechet_distance_agrees_with_scipy_sqrtm_and_pytorch_fid(d, n):
    mu1, s1 = random_stats(d, n, seed=0)
    mu2, s2 = random_stats(d, n, seed=1, shift=0.3)
    expected = independent_fid(mu1, s1, mu2, s2)
    ours = fid.frechet_distance_pytorch_fid((mu1, s1), (mu2, s2))
    assert ours == pytest.approx(expected, rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch-fid passes sqrtm's deprecated `disp`
        theirs = pytorch_fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(float(theirs), rel=1e-9)
    # The project's other formulas give the same number: the independent sqrtm one and torch-fidelity's eigenvalues.
    assert fid.fid_from_stats((mu1, s1), (mu2, s2)) == pytest.approx(ours, rel=1e-9)
    eig = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real)
    assert float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * eig) == pytest.approx(ours, rel=1e-6)
    assert fid.frechet_distance_pytorch_fid((mu1, s1), (mu1, s1)) == pytest.approx(0.0, abs=1e-6 * np.trace(s1))


def test_frechet_distance_retries_with_eps_and_refuses_large_imaginary_parts(monkeypatch):
    mu1, s1 = random_stats(8, 50, seed=2)
    mu2, s2 = random_stats(8, 50, seed=3, shift=1.0)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def sqrtm_failing_once(a, *args, **kwargs):
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm_failing_once)
    value = fid.frechet_distance_pytorch_fid((mu1, s1), (mu2, s2), eps=1e-3)
    offset = np.eye(8) * 1e-3
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                      - 2 * np.trace(real_sqrtm((s1 + offset) @ (s2 + offset))).real)
    assert value == pytest.approx(expected, rel=1e-12)

    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a, *args, **kwargs: real_sqrtm(a) + 0.1j * np.eye(len(a)))
    with pytest.raises(ValueError, match="imaginary component") as info:
        fid.frechet_distance_pytorch_fid((mu1, s1), (mu2, s2))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# (b) Preprocessing


def smooth_uint8(n: int, size: int, seed: int) -> torch.Tensor:
    """Random smooth uint8 images [n, 3, size, size] (features vary between images)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, max(size // 4, 2), max(size // 4, 2), generator=g), size=(size, size),
                      mode="bilinear", align_corners=False)
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("size", [32, 128])
def test_preprocessing_is_pytorch_fids_resize_and_scaling(size):
    x = smooth_uint8(2, size, seed=size)
    out = fid_inception.preprocess(x)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    expected = 2 * F.interpolate(x.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert torch.equal(out, expected)
    # A constant image stays constant: value v maps to 2 v / 255 - 1.
    for v in (0, 37, 255):
        const = fid_inception.preprocess(torch.full((1, 3, size, size), v, dtype=torch.uint8))
        torch.testing.assert_close(const, torch.full_like(const, 2 * v / 255 - 1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="uint8"):
        fid_inception.preprocess(x.float())


# ---------------------------------------------------------------------------------------------
# (c) Architecture parity on random weights with pytorch-fid's key names


def random_pytorch_fid_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the keys and shapes of pytorch-fid's file (torchvision's Inception3 with 1008 classes,
    no aux head), scaled so activations neither vanish nor explode over the 94 convolutions."""
    from torchvision.models.inception import Inception3

    g = torch.Generator().manual_seed(seed)
    layout = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    state = {}
    for key, value in layout.items():
        if key.endswith("conv.weight"):
            state[key] = torch.randn(value.shape, generator=g) * math.sqrt(2.0 / value[0].numel())
        elif key.endswith("bn.weight"):
            state[key] = 0.75 + 0.5 * torch.rand(value.shape, generator=g)
        elif key.endswith(("bn.bias", "running_mean")):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key == "fc.weight":
            state[key] = 0.01 * torch.randn(value.shape, generator=g)
        else:
            state[key] = torch.zeros_like(value)
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    state = random_pytorch_fid_state_dict()
    path = tmp_path_factory.mktemp("pytorch_fid") / fid_inception.WEIGHTS_FILE
    torch.save(state, path)
    return state, path


@pytest.fixture(scope="module")
def images():
    return {32: smooth_uint8(2, 32, seed=5), 128: smooth_uint8(2, 128, seed=6)}


@pytest.fixture(scope="module")
def pytorch_fid_features(weights, images):
    """pytorch-fid's InceptionV3 (all four blocks) with its weight download replaced by the random state dict."""
    state, _ = weights
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pytorch_fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: state)
        net = pytorch_fid_inception.InceptionV3([0, 1, 2, 3]).eval()
    out = {}
    with torch.no_grad():
        for size, x in images.items():
            blocks = net(x.float() / 255)  # pytorch-fid's input: ToTensor of the PNG
            out[size] = {dims: F.adaptive_avg_pool2d(b, (1, 1)).flatten(1)
                         for dims, b in zip(fid_inception.FEATURES, blocks)}
    return out


def test_features_equal_pytorch_fids_on_the_same_weights(weights, images, pytorch_fid_features):
    _, path = weights
    net = fid_inception.load_fid_inception(path)
    for size, x in images.items():
        with torch.no_grad():
            ours = net(x, fid_inception.FEATURES)
        for dims in fid_inception.FEATURES:
            theirs = pytorch_fid_features[size][dims]
            assert ours[dims].shape == (2, int(dims))
            torch.testing.assert_close(ours[dims], theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))
        # The random network is not degenerate: the two images get different pool3 features.
        assert (ours["2048"][0] - ours["2048"][1]).abs().max() > 1e-3


def test_backend_features_through_eval_fid_equal_pytorch_fids(weights, images, pytorch_fid_features):
    _, path = weights
    base = backends.MetricBackend(name="standard", lpips_net=nn.Identity(),
                                  feature_extractor=backends.STANDARD_FEATURE_EXTRACTOR)
    backend = backends.with_fid_backend(base, "pytorch-fid", path)
    assert backend.feature_extractor == fid_inception.EXTRACTOR_NAME and backend.feature_layer("fid") == "2048"
    assert backend.fid_backend_name == "pytorch-fid" and backend.name == "standard"
    for size, x in images.items():
        feats = fid.extract_features(x, backend, batch_size=2, cuda=False)
        expected = pytorch_fid_features[size]["2048"].double().numpy()
        np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # compute_fid: pytorch-fid's formula on these features, recorded under the backend name "pytorch-fid". At
    # pytorch-fid's --dims 64 (first block), so that sqrtm is cheap.
    backend64 = dataclasses.replace(backend, fid_layer="64")
    result = fid.compute_fid(images[32], images[128], backend64, kid=False, batch_size=2, cuda=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm: deprecated `disp`, singular product (2 images)
        expected_fid = pytorch_fid_score.calculate_frechet_distance(
            *fid.stats_from_features(pytorch_fid_features[32]["64"].double().numpy()),
            *fid.stats_from_features(pytorch_fid_features[128]["64"].double().numpy()))
    assert result["fid"] == pytest.approx(float(expected_fid), rel=1e-4)
    assert result["backend"] == "pytorch-fid" and result["feature_extractor"] == "pytorch-fid-inception-v3"
    assert result["feature_layer"] == "64"
    rows = fid.fid_records({"method": "x"}, result)
    assert [(r["metric"], r["backend"]) for r in rows] == [("fid", "pytorch-fid")]


def test_torch_fidelity_inception_differs_from_pytorch_fid_on_the_same_weights(weights, images, pytorch_fid_features):
    """torch-fidelity's inception-v3-compat loads the same file (same keys) but resizes like TF 1.x and scales by
    (x - 128) / 128: its features are not pytorch-fid's, hence a separate backend."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    _, path = weights
    tf_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    with torch.no_grad():
        theirs = tf_net(images[128])[0]
    ours = pytorch_fid_features[128]["2048"]
    relative = ((theirs - ours).norm(dim=1) / ours.norm(dim=1)).min()
    assert relative > 1e-3


def test_wrong_weights_files_are_refused_in_one_line(weights, tmp_path):
    state, _ = weights
    wrong = tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, wrong)
    with pytest.raises(backends.WeightsFileError, match="missing Conv2d_1a_3x3") as info:
        fid_inception.load_fid_inception(wrong)
    assert str(wrong) in str(info.value) and "\n" not in str(info.value)
    reshaped = tmp_path / "reshaped.pth"
    torch.save({**state, "Mixed_7c.branch_pool.conv.weight": torch.zeros(192, 2048, 3, 3)}, reshaped)
    with pytest.raises(backends.WeightsFileError, match="wrong shape of Mixed_7c.branch_pool.conv.weight"):
        fid_inception.load_fid_inception(reshaped)
    pickled = tmp_path / "pickled.pth"
    torch.save({"net": nn.Linear(2, 2)}, pickled)
    with pytest.raises(backends.WeightsFileError, match="weights_only=True"):
        fid_inception.load_fid_inception(pickled)


# ---------------------------------------------------------------------------------------------
# (d) The eval CLI: --fid-backend pytorch-fid --fid-weights PATH


@pytest.fixture
def cli_setup(tmp_path, monkeypatch):
    """A shapes data spec and a random AlexNet trunk (the standard backend's LPIPS); downloads refused."""
    import torchvision

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    spec = tmp_path / "data.yaml"
    spec.write_text("data: {name: shapes, image_size: 16, num_images: 6}\n")
    alexnet = tmp_path / backends.ALEXNET_FILE
    trunk = torchvision.models.alexnet().features.state_dict()
    torch.save({f"features.{k}": v for k, v in trunk.items()}, alexnet)
    return spec, alexnet


def test_cli_missing_fid_weights_is_one_line_naming_the_file(cli_setup, tmp_path, capsys):
    spec, alexnet = cli_setup
    missing = tmp_path / "nowhere" / fid_inception.WEIGHTS_FILE
    args = ["ref-stats", "--data", str(spec), "--num-images", "3", "--out", str(tmp_path / "ref.npz"),
            "--device", "cpu", "--backend", "standard", "--alexnet-weights", str(alexnet), "--fid-backend",
            "pytorch-fid"]
    assert eval_main([*args, "--fid-weights", str(missing)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "fid_weights" in err
    assert fid_inception.WEIGHTS_URL in err
    # Without --fid-weights it is looked for in $TORCH_HOME/hub/checkpoints, and named there.
    assert eval_main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in err and fid_inception.WEIGHTS_FILE in err
    # A file that is not pytorch-fid's state dict: one line naming it.
    assert eval_main([*args, "--fid-weights", str(alexnet)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(alexnet) in err and "pytorch-fid" in err
    assert not (tmp_path / "ref.npz").exists()


def test_cli_ref_stats_records_the_pytorch_fid_backend(cli_setup, weights, tmp_path):
    spec, alexnet = cli_setup
    _, path = weights
    out = tmp_path / "ref.npz"
    assert eval_main(["ref-stats", "--data", str(spec), "--num-images", "3", "--out", str(out), "--device", "cpu",
                      "--batch-size", "3", "--backend", "standard", "--alexnet-weights", str(alexnet),
                      "--fid-backend", "pytorch-fid", "--fid-weights", str(path)]) == 0
    stats = fid.load_stats(out)
    assert stats.meta["backend"] == "pytorch-fid"
    assert stats.meta["feature_extractor"] == "pytorch-fid-inception-v3" and stats.meta["feature_layer"] == "2048"
    assert stats.mu.shape == (2048,) and stats.features.shape == (3, 2048)
