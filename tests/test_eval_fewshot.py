"""Few-shot generation (eval/fewshot.py): acceptance sampling draws from p(z | class) with the Bayes acceptance
rate, the latent classifiers recover a known posterior (nnPU without the PN bias), the labelled subsets follow
the protocol, and the CLI writes the fewshot table with the naive baseline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eval import cli
from eval.common import read_records
from eval.fewshot import (
    acceptance_sample,
    choose_labelled,
    class_split,
    nnpu_risk,
    train_latent_classifier,
)
from pdae.checkpoint import save_model_folder
from pdae.data import build_dataset
from pdae.methods import build_method, export_method
from pdae.training import encode_dataset

PI, MU = 0.3, 1.0  # mixture: component 1 ~ N(+MU, 1) with weight PI, component 0 ~ N(-MU, 1)


def _mixture_draw(generator: torch.Generator):
    """draw_fn(k) -> [k, 2]: column 0 the sample z, column 1 its component (for bookkeeping only)."""

    def draw(k: int) -> torch.Tensor:
        comp = (torch.rand(k, generator=generator, dtype=torch.float64) < PI).double()
        z = torch.randn(k, generator=generator, dtype=torch.float64) + MU * (2 * comp - 1)
        return torch.stack([z, comp], dim=1)

    return draw


def _posterior(z: torch.Tensor) -> torch.Tensor:
    """Bayes p(component 1 | z) = sigmoid(2 MU z + log(PI / (1 - PI)))."""
    return torch.sigmoid(2 * MU * z + math.log(PI / (1 - PI)))


def _expected_component_fraction() -> float:
    """P(component 1 | accepted) = E[p(1|z) 1{c=1}] / P(accept) = E_{z ~ N(MU,1)}[p(1|z)], by quadrature."""
    z = torch.linspace(MU - 10, MU + 10, 200_001, dtype=torch.float64)
    density = torch.exp(-0.5 * (z - MU) ** 2) / math.sqrt(2 * math.pi)
    return float(torch.trapezoid(density * _posterior(z), z))


def test_acceptance_sampler_matches_bayes_on_a_gaussian_mixture() -> None:
    n = 20_000
    res = acceptance_sample(_mixture_draw(torch.Generator().manual_seed(0)), lambda x: _posterior(x[:, 0]), n,
                            torch.Generator().manual_seed(1), max_draws=10**6)
    z, comp = res.samples[:, 0], res.samples[:, 1]
    assert res.samples.shape == (n, 2) and res.accepted >= n
    # Acceptance rate = E[p(1|z)] = PI; accepted z ~ N(MU, 1); component balance = E_{N(MU,1)}[p(1|z)].
    assert abs(res.rate - PI) < 0.01
    assert abs(float(z.mean()) - MU) < 0.03 and abs(float(z.std()) - 1.0) < 0.03
    assert abs(float(comp.mean()) - _expected_component_fraction()) < 0.012
    # The complementary acceptance probability picks the other class.
    other = acceptance_sample(_mixture_draw(torch.Generator().manual_seed(2)), lambda x: 1 - _posterior(x[:, 0]), n,
                              torch.Generator().manual_seed(3), max_draws=10**6)
    assert abs(other.rate - (1 - PI)) < 0.01 and abs(float(other.samples[:, 0].mean()) + MU) < 0.03


def test_acceptance_sampler_is_seeded_and_caps_draws() -> None:
    def run(seed: int) -> torch.Tensor:
        return acceptance_sample(_mixture_draw(torch.Generator().manual_seed(seed)), lambda x: _posterior(x[:, 0]),
                                 50, torch.Generator().manual_seed(seed), max_draws=10_000, batch_size=32).samples

    assert torch.equal(run(4), run(4)) and not torch.equal(run(4), run(5))
    with pytest.raises(ValueError, match=r"only 0 of 10 samples accepted after 1000 draws \(rate 0\)"):
        acceptance_sample(_mixture_draw(torch.Generator()), lambda x: torch.zeros(len(x)), 10,
                          torch.Generator().manual_seed(0), max_draws=1000, batch_size=300)
    # Exactly the first n accepted draws, in draw order: p = 1 keeps everything.
    draws = torch.arange(100.0).unsqueeze(1)
    chunks = iter(draws.split(16))
    res = acceptance_sample(lambda k: next(chunks), lambda x: torch.ones(len(x)), 40,
                            torch.Generator(), max_draws=100, batch_size=16)
    assert torch.equal(res.samples, draws[:40]) and (res.draws, res.accepted) == (48, 48)


def _labelled_mixture(n_pos: int, n_neg: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2-d Gaussians N(+m, I) (y = 1) and N(-m, I) (y = 0), m = (1, 0.5)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.tensor([1.0, 0.5], dtype=torch.float64)
    pos = torch.randn(n_pos, 2, generator=g, dtype=torch.float64) + m
    neg = torch.randn(n_neg, 2, generator=g, dtype=torch.float64) - m
    return torch.cat([pos, neg]), torch.cat([torch.ones(n_pos), torch.zeros(n_neg)])


def test_logistic_classifier_recovers_the_bayes_posterior() -> None:
    z, y = _labelled_mixture(3000, 3000, 0)
    clf = train_latent_classifier(z, y, mean=torch.zeros(2), std=torch.ones(2), l2=1e-6)
    # Balanced classes: logit = 2 m . z, no bias.
    torch.testing.assert_close(clf.weight, torch.tensor([2.0, 1.0], dtype=torch.float64), atol=0.12, rtol=0)
    assert abs(float(clf.bias)) < 0.08
    again = train_latent_classifier(z, y, mean=torch.zeros(2), std=torch.ones(2), l2=1e-6)
    assert torch.equal(again.weight, clf.weight)
    probe = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    assert float(clf.complement().prob(probe)) == pytest.approx(1 - float(clf.prob(probe)), abs=1e-12)


def test_nnpu_recovers_the_posterior_that_pn_on_unlabelled_misses() -> None:
    # U: a PI / (1 - PI) mixture; P: labelled positives. True logit = 2 m . z + log(PI / (1 - PI)).
    z_pos, _ = _labelled_mixture(1500, 0, 1)
    z_unl, y_unl = _labelled_mixture(int(6000 * PI), int(6000 * (1 - PI)), 2)
    z = torch.cat([z_pos, z_unl])
    y = torch.cat([torch.ones(len(z_pos)), torch.zeros(len(z_unl))])
    kw = dict(mean=torch.zeros(2), std=torch.ones(2), l2=1e-6)
    pu = train_latent_classifier(z, y, risk="nnpu", class_prior=PI, steps=800, **kw)
    torch.testing.assert_close(pu.weight, torch.tensor([2.0, 1.0], dtype=torch.float64), atol=0.25, rtol=0)
    assert abs(float(pu.bias) - math.log(PI / (1 - PI))) < 0.25
    grid = torch.cartesian_prod(torch.linspace(-3, 3, 13), torch.linspace(-3, 3, 13)).double()
    truth = torch.sigmoid(grid @ torch.tensor([2.0, 1.0], dtype=torch.float64) + math.log(PI / (1 - PI)))
    assert float((pu.prob(grid) - truth).abs().mean()) < 0.04
    pn = train_latent_classifier(z, y, **kw)  # unlabelled treated as negatives: a biased posterior
    assert float((pn.prob(grid) - truth).abs().mean()) > 0.08
    # The risk itself: pi R_p^+ and R_u^- - pi R_p^- with softplus losses.
    pos, neg = nnpu_risk(torch.tensor([0.0]), torch.tensor([0.0, 0.0]), 0.5)
    assert float(pos) == pytest.approx(0.5 * math.log(2)) and float(neg) == pytest.approx(0.5 * math.log(2))
    with pytest.raises(ValueError, match="class prior"):
        train_latent_classifier(z, y, risk="nnpu", **kw)


def test_labelled_subsets_follow_the_protocol() -> None:
    positive = torch.zeros(300, dtype=torch.bool)
    positive[::3] = True  # 100 positives
    idx, y = choose_labelled(positive, "binary", 20, 0, torch.Generator().manual_seed(0))
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert positive[idx[y == 1]].all() and not positive[idx[y == 0]].any() and int(y.sum()) == 10
    again, _ = choose_labelled(positive, "binary", 20, 0, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    idx, y = choose_labelled(positive, "pu", 30, 1000, torch.Generator().manual_seed(0))
    assert int(y.sum()) == 30 and positive[idx[y == 1]].all()
    assert len(idx) == 300 and len(set(idx.tolist())) == 300  # unlabelled capped at the rest of the split
    with pytest.raises(ValueError, match="need 200 images per class"):
        choose_labelled(positive, "binary", 400, 0, torch.Generator())


def test_class_definitions_from_attributes_and_labels() -> None:
    shapes = build_dataset({"name": "shapes", "image_size": 8, "num_images": 60})
    split = class_split(shapes, "is_red", None)
    assert split.names == ("is_red", "Non-is_red")
    assert torch.equal(split.positive, shapes.attributes[:, shapes.attribute_names.index("is_red")] > 0)
    digits = build_dataset({"name": "digits", "image_size": 8})
    split = class_split(digits, None, ["0", "1", "2", "3", "4"], ["low", "high"])
    assert split.names == ("low", "high") and torch.equal(split.positive, torch.as_tensor(digits.labels) < 5)
    with pytest.raises(ValueError, match="exactly one of"):
        class_split(digits, None, None)
    with pytest.raises(ValueError, match="not an attribute"):
        class_split(digits, "Male", None)
    with pytest.raises(ValueError, match="unknown class"):
        class_split(digits, None, ["11"])


# CLI on random-initialised tiny models.
INFO = {"image_size": 8, "channels": 1, "num_classes": 10, "num_attributes": 0}
SPEC = {"name": "digits", "image_size": 8, "channels": 1}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fewshot_models")
    torch.manual_seed(0)
    dpm = build_method("dpm", {"unet": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                        "attention_ds": [2]}}, {}, {"kind": "linear", "T": 1000}, INFO)
    pdae = build_method("pdae", {"encoder": {"latent_dim": 8, "channels": [32], "attention_resolutions": []},
                                 "estimator": {"latent_dim": 8}}, {}, {}, INFO, prior=dpm).eval()
    latent = build_method("latent", {"net": {"hidden": 32, "num_layers": 3, "time_dim": 16, "time_out": 16}}, {},
                          {"kind": "const", "T": 1000, "beta": 0.008}, INFO, encoder=pdae).eval()
    latent.stats.set(encode_dataset(pdae, build_dataset(SPEC), torch.device("cpu")))
    feature_net = build_method("feature_net", {"net": {"channels": [16, 32], "feature_dim": 16}}, {}, {}, INFO)
    out = {}
    for name, method in (("pdae", pdae), ("latent", latent), ("feature_net", feature_net)):
        tensors, config = export_method(method)
        out[name] = save_model_folder(root / name, tensors, config, {"data": SPEC, "seed": 1, "images_seen": 64})
    return out


@pytest.mark.parametrize("scenario", ["binary", "pu"])
def test_cli_writes_fewshot_records(folders: dict, tmp_path: Path, scenario: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("eval.fewshot",))  # independent of the other eval modules
    out, arrays = tmp_path / "fewshot.json", tmp_path / "fewshot.npz"
    argv = ["fewshot", "--autoencoder", str(folders["pdae"]), "--latent", str(folders["latent"]),
            "--scenario", scenario, "--positive-classes", "0", "1", "2", "3", "4", "--class-names", "low", "high",
            "--num-labelled", "20", "--num-unlabelled", "200", "--num-samples", "12", "--steps", "3",
            "--feature-net", str(folders["feature_net"]), "--device", "cpu", "--out", str(out), "--arrays", str(arrays)]
    assert cli.main(argv) == 0
    rows = read_records(out)
    key = {(r["class"], r["method"], r["metric"]) for r in rows}
    assert key == {(c, m, k) for c in ("low", "high") for m, k in
                   (("pdae", "fid"), ("pdae", "acceptance_rate"), ("naive", "fid"))}
    assert all(r["table"] == "fewshot" and r["scenario"] == scenario and r["seed"] == 1 for r in rows)
    assert all(0.0 < r["value"] <= 1.0 for r in rows if r["metric"] == "acceptance_rate")
    assert all(r["value"] > 0.0 for r in rows if r["metric"] == "fid")
    # Every FID (PDAE's and the naive baseline's) at the same n, with 200 bootstrap replicates near the value.
    for r in (r for r in rows if r["metric"] == "fid"):
        assert r["n_samples"] == 12 and r["units"] == "bootstrap" and len(r["values"]) == 200
        # Resampling with replacement raises FID by about tr(cov)/n: at n = 12 the replicates of the naive FID
        # (near the floor) sit ~60% above its value, those of PDAE's ~10%.
        assert 0.9 * r["value"] <= np.median(r["values"]) <= 2.0 * r["value"]
    with np.load(arrays) as npz:
        assert npz["grid"].shape == (2, 8, 1, 8, 8) and list(npz["row_labels"]) == ["low", "high"]
    # A class the classifier never accepts is a one-line error, not a hang.
    assert cli.main(argv[:-4] + ["--max-draws", "1", "--num-samples", "500", "--out", str(out)]) == 2
