"""Linear probe (eval/probe.py, scikit-learn's LogisticRegression): separable data is read perfectly, random labels
are not, the optimum is the hand-written L-BFGS probe's it replaced, absent classes are never predicted, targets
and controls are the right ones, and the CLI writes the probe table."""

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


def _previous_probe(x: torch.Tensor, y: torch.Tensor, k: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The hand-written probe that scikit-learn replaced: mean CE + l2 / 2 ||W||^2 on standardised x, float64,
    full-batch L-BFGS from zero (kept here as the reference the new probe must agree with)."""
    u = (x.double() - x.double().mean(0)) / x.double().std(0, unbiased=False).clamp_min(1e-6)
    weight = torch.zeros(k, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(u @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


@pytest.mark.parametrize("k", [3, 2])
def test_probe_agrees_with_the_previous_hand_written_probe(k: int) -> None:
    """Same objective, same optimum: weights and logits within 1e-4 of the L-BFGS fit it replaced, for three
    classes (multinomial) and two (scikit-learn's single logit-difference vector, C doubled), deterministically."""
    x, y = _separable(400, 2)
    x = x + 0.8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))  # not separable any more
    y = y % k
    l2 = 1e-2
    a, b = fit_linear_probe(x, y, k, l2=l2), fit_linear_probe(x, y, k, l2=l2)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    weight, bias = _previous_probe(x, y, k, l2)
    assert a.weight.shape == (k, 10) and a.bias.shape == (k,)
    np.testing.assert_allclose(a.weight.numpy(), weight.numpy(), atol=1e-4)
    # Bias is defined up to a constant shift across classes (softmax invariance): compare centred.
    np.testing.assert_allclose(a.bias.numpy() - a.bias.numpy().mean(), (bias - bias.mean()).numpy(), atol=1e-4)
    x_te, y_te = _separable(300, 4)
    u = (x_te.double() - a.mean) / a.std
    logits = u @ weight.T + bias
    assert torch.equal(a.predict(x_te), logits.argmax(1))
    np.testing.assert_allclose(torch.softmax(a.logits(x_te), 1).numpy(), torch.softmax(logits, 1).numpy(), atol=1e-4)


def test_classes_absent_from_training_are_never_predicted() -> None:
    x, y = _separable(300, 5)
    keep = y != 1
    probe = fit_linear_probe(x[keep], y[keep], num_classes=4)
    assert probe.weight.shape == (4, 10) and torch.all(probe.weight[[1, 3]] == 0)
    assert torch.isinf(probe.bias[1]) and torch.isinf(probe.bias[3])
    assert set(probe.predict(x).tolist()) <= {0, 2}
    assert probe_accuracy(x[keep], y[keep], x[keep], y[keep]) > 0.95
    one = fit_linear_probe(x, torch.full((300,), 2), num_classes=3)
    assert torch.all(one.predict(x) == 2)


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
