"""Linear probe (eval/probe.py): separable data is read perfectly, random labels are not, the optimum is
scikit-learn's, targets and controls are the right ones, and the CLI writes the probe table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eval import cli
from eval.common import read_records
from eval.probe import fit_linear_probe, probe_accuracy, probe_targets, random_encoder_like
from pdae.checkpoint import save_model_folder
from pdae.data import build_dataset
from pdae.methods import build_method, export_method
from pdae.nets.encoder import SemanticEncoder


def _separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes in 10-d, labelled by which of three fixed directions scores highest (linear)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g) * torch.linspace(0.5, 3.0, 10)  # unequal scales: standardisation matters
    w = torch.randn(3, 10, generator=torch.Generator().manual_seed(123))
    return x, (x / torch.linspace(0.5, 3.0, 10) @ w.T).argmax(1)


def test_separable_targets_are_read_almost_perfectly() -> None:
    x_tr, y_tr = _separable(2000, 0)
    x_te, y_te = _separable(1000, 1)
    assert probe_accuracy(x_tr, y_tr, x_te, y_te, l2=1e-5, max_iter=300) > 0.98


def test_random_labels_give_chance_accuracy() -> None:
    g = torch.Generator().manual_seed(0)
    x_tr, x_te = torch.randn(2000, 20, generator=g), torch.randn(2000, 20, generator=g)
    y_tr, y_te = torch.randint(0, 2, (2000,), generator=g), torch.randint(0, 2, (2000,), generator=g)
    acc = probe_accuracy(x_tr, y_tr, x_te, y_te)
    assert abs(acc - 0.5) < 0.04  # 3.6 binomial standard deviations at n = 2000


def test_probe_is_deterministic_and_matches_sklearn_optimum() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _separable(400, 2)
    x = x + 0.8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))  # not separable any more
    l2 = 1e-2
    a, b = fit_linear_probe(x, y, 3, l2=l2), fit_linear_probe(x, y, 3, l2=l2)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    # sklearn minimises 1/2 ||W||^2 + C sum_i CE, i.e. ours with C = 1 / (N l2).
    u = ((x.double() - a.mean) / a.std).numpy()
    ref = LogisticRegression(C=1.0 / (len(x) * l2), tol=1e-10, max_iter=5000).fit(u, y.numpy())
    np.testing.assert_allclose(a.weight.numpy(), ref.coef_, atol=2e-4)
    # Bias is defined up to a constant shift across classes (softmax invariance).
    centred = a.bias.numpy() - a.bias.numpy().mean()
    np.testing.assert_allclose(centred, ref.intercept_ - ref.intercept_.mean(), atol=2e-4)


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="targets must lie in"):
        fit_linear_probe(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]), num_classes=2)
    with pytest.raises(ValueError, match="need features"):
        fit_linear_probe(torch.zeros(4), torch.zeros(4))


def test_shapes_targets_are_labels_attributes_and_other_factors() -> None:
    ds = build_dataset({"name": "shapes", "image_size": 8, "num_images": 40, "label_factor": "colour"})
    targets = probe_targets(ds)
    assert list(targets)[0] == "labels" and torch.equal(targets["labels"], torch.as_tensor(ds.factors["colour"]))
    assert "colour" not in targets  # the label factor is not repeated
    assert torch.equal(targets["shape"], torch.as_tensor(ds.factors["shape"]))
    assert torch.equal(targets["background"], torch.as_tensor(ds.factors["background"]))
    assert torch.equal(targets["is_large"], (ds.attributes[:, ds.attribute_names.index("is_large")] > 0).long())
    digits = probe_targets(build_dataset({"name": "digits", "image_size": 8}))
    assert list(digits) == ["labels"]


def test_random_encoder_is_seeded_and_leaves_the_global_rng_alone() -> None:
    enc = SemanticEncoder(8, 1, 16, channels=[32], attention_resolutions=[])
    state = torch.get_rng_state()
    a, b, c = random_encoder_like(enc, 5), random_encoder_like(enc, 5), random_encoder_like(enc, 6)
    assert torch.equal(torch.get_rng_state(), state)
    assert type(a) is SemanticEncoder and a.config == enc.config
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def _pdae_folder(tmp: Path, spec: dict) -> Path:
    info = {"image_size": 8, "channels": 1, "num_classes": 10, "num_attributes": 0}
    torch.manual_seed(0)
    unet = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [2]}
    dpm = build_method("dpm", {"unet": unet}, {}, {"kind": "linear", "T": 1000}, info)
    pdae = build_method("pdae", {"encoder": {"latent_dim": 8, "channels": [32], "attention_resolutions": []},
                                 "estimator": {"latent_dim": 8}}, {}, {}, info, prior=dpm)
    tensors, config = export_method(pdae)
    return save_model_folder(tmp / "pdae", tensors, config, {"data": spec, "seed": 3, "images_seen": 0})


def test_cli_writes_probe_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("eval.probe",))  # independent of the other eval modules
    spec = {"name": "digits", "image_size": 8, "channels": 1}
    folder = _pdae_folder(tmp_path, spec)
    out = tmp_path / "probe.json"
    argv = ["probe", "--encoder", str(folder), "--random-encoder", "--pixels", "--num-train", "300",
            "--num-test", "100", "--out", str(out), "--device", "cpu"]
    assert cli.main(argv) == 0
    rows = read_records(out)
    assert {(r["encoder"], r["target"]) for r in rows} == {(e, "labels") for e in ("pdae", "random_encoder", "pixels")}
    assert all(r["table"] == "probe" and r["metric"] == "accuracy" and r["dataset"] == "digits" for r in rows)
    acc = {r["encoder"]: r["value"] for r in rows}
    assert acc["pixels"] > 0.8  # digits are nearly linearly separable in pixel space
    assert all(0.1 < v <= 1.0 for v in acc.values())
    meta = json.loads(out.read_text())["meta"]
    assert meta["feature_dims"] == {"pdae": 8, "random_encoder": 8, "pixels": 64}
    # Same seed, same numbers.
    assert cli.main(argv[:-4] + ["--out", str(tmp_path / "again.json"), "--device", "cpu"]) == 0
    assert [r["value"] for r in read_records(tmp_path / "again.json")] == [r["value"] for r in rows]
    # One-line errors.
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"data": {"name": "digits", "image_size": 8, "channels": 1}}))
    assert cli.main(["probe", "--random-encoder", "--pixels", "--data", str(tmp_path / "bad.yaml"),
                     "--out", str(out)]) == 2
