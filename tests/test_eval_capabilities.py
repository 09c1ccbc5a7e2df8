"""Capabilities of the methods (pdae.methods.base.Method), and eval/ asking them instead of switching on names.

eval/ must not compare a method's `name` (`method.name == "pdae"`, `decoder.name in (...)`, ...): it asks
`has_encoder`, `conditioning`, `has_shift`, ... (docs/protocol.md §9.2). The source scan below enforces that; the
other tests pin each method's capabilities and check that the capability tests of eval/ accept exactly the
methods its name tests used to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from eval import common
from pdae.diffusion.gaussian import shift_eps
from pdae.methods import METHOD_NAMES, EpsPrediction, Method, build_method
from tests.test_eval_sample import INFO, LATENT_DIM, perturb_shift, tiny_models

EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
# `.name` of these is not a method's: the metric backend's name, a path's file name.
NOT_A_METHOD = {"backend", "path", "folder", "file", "tmp"}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models() -> dict[str, Method]:
    """Every method class, tiny: dpm, pdae (G != 0), diffae, latent, feature_net, pdae_class, classifier."""
    out = tiny_models()
    perturb_shift(out["pdae"])
    torch.manual_seed(1)
    out["pdae_class"] = build_method("pdae_class", {"estimator": {}}, {}, {}, INFO, prior=out["dpm"])
    perturb_shift(out["pdae_class"], seed=2)
    out["classifier"] = build_method("classifier", {"head": {}}, {"targets": "labels"}, {}, INFO, encoder=out["pdae"])
    return {k: m.eval().requires_grad_(False) for k, m in out.items()}


# ------------------------------------------------------------------------------------------------
# No method-name switches in eval/.


def _name_receiver(node: ast.AST) -> str | None:
    """'x' for `x.name` / `a.x.name` / `getattr(x, "name", ...)`, else None."""
    if isinstance(node, ast.Attribute) and node.attr == "name":
        return ast.unparse(node.value).split(".")[-1]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "name"):
        return ast.unparse(node.args[0]).split(".")[-1]
    return None


def name_switches(source: str) -> list[tuple[int, str]]:
    """(line, code) of every comparison (==, !=, in, not in) involving `<x>.name` of a non-allowed x, and of
    every lookup keyed by one (`LABELS[method.name]`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if not all(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
                continue
        elif isinstance(node, ast.Subscript):
            operands = [node.slice]
        else:
            continue
        receivers = [r for r in map(_name_receiver, operands) if r is not None]
        if any(r not in NOT_A_METHOD for r in receivers):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_scan_catches_name_switches_and_allows_backend_names():
    caught = name_switches(
        'if method.name == "pdae": pass\n'
        'ok = decoder.name != "dpm"\n'
        'x = latent.name in ("latent",)\n'
        'y = self.model.name not in NAMES\n'
        'z = LABELS[method.name]\n'
        'w = getattr(method, "name", None) == "dpm"\n'
        'v = "pdae" == diffae.name\n')
    assert [line for line, _ in caught] == [1, 2, 3, 4, 5, 6, 7]
    assert name_switches('a = backend.name == "standard"\nb = path.name in SKIP\nc = label or method.name\n'
                         'd = f"{method.name!r}"\ne = name == "auto"\n') == []


def test_eval_does_not_switch_on_method_names():
    files = sorted(EVAL_DIR.glob("*.py"))
    assert len(files) > 10
    hits = [f"{f.name}:{line}: {code}" for f in files for line, code in name_switches(f.read_text())]
    assert hits == [], "eval/ switches on method names; ask a capability of pdae.methods.Method:\n" + "\n".join(hits)


# ------------------------------------------------------------------------------------------------
# The capabilities of every method class.

EXPECTED = {  # is_diffusion, input_kind, has_encoder, conditioning, condition_optional, has_shift, record_label
    "dpm": (True, "images", False, "none", True, False, "ddim"),
    "pdae": (True, "images", True, "z", True, True, "pdae"),
    "pdae_class": (True, "images", False, "label", False, True, "pdae_class"),
    "diffae": (True, "images", True, "z", False, False, "diffae"),
    "latent": (True, "latents", False, "none", True, False, "latent"),
    "classifier": (False, "latents", False, "none", True, False, "classifier"),
    "feature_net": (False, "images", False, "none", True, False, "feature_net"),
}


def test_every_method_class_declares_its_capabilities(models):
    assert set(models) == set(METHOD_NAMES) == set(EXPECTED)
    for name, m in models.items():
        got = (m.is_diffusion, m.input_kind, m.has_encoder, m.conditioning, m.condition_optional, m.has_shift,
               m.record_label)
        assert got == EXPECTED[name], name
        assert m.conditioning in ("none", "z", "label")
        assert (m.schedule is not None) == m.is_diffusion, name
    # latent_dim: the z of the autoencoders, the stats of the latent models; None without a z.
    dims = {name: m.latent_dim for name, m in models.items()}
    assert dims == {"dpm": None, "pdae": LATENT_DIM, "pdae_class": None, "diffae": LATENT_DIM,
                    "latent": LATENT_DIM, "classifier": LATENT_DIM, "feature_net": None}
    assert models["latent"].latent_dim == int(models["latent"].stats.mean.shape[0])
    # num_classes: the labels of the class-conditional PDAE and of the feature net.
    assert {name: m.num_classes for name, m in models.items() if m.num_classes is not None} == {
        "pdae_class": INFO["num_classes"], "feature_net": INFO["num_classes"]}
    assert Method().latent_dim is None and Method().record_label == "method" and not Method().is_diffusion


def test_needs_condition_and_semantic_encoder_of_every_method(models):
    """needs_condition: `denoiser()` without a condition is refused (Diff-AE, the class-conditional PDAE);
    semantic_encoder: the network `encode` runs (PDAE's SemanticEncoder, Diff-AE's half U-Net), None elsewhere."""
    assert {name for name, m in models.items() if m.needs_condition} == {"diffae", "pdae_class"}
    for name, m in models.items():
        assert m.needs_condition == (m.conditioning != "none" and not m.condition_optional), name
        assert (m.semantic_encoder is not None) == m.has_encoder, name
    x0 = torch.rand(2, INFO["channels"], INFO["image_size"], INFO["image_size"]) * 2 - 1
    for name in ("pdae", "diffae"):
        enc = models[name].semantic_encoder
        assert enc.config["latent_dim"] == models[name].latent_dim == LATENT_DIM
        assert any(enc is module for module in models[name].modules()), name  # a part of the method, not a copy
        torch.testing.assert_close(enc(x0), models[name].encode(x0), atol=0, rtol=0)
    assert Method().semantic_encoder is None and not Method().needs_condition


def test_eval_reaches_no_method_internals():
    """eval/ uses capabilities, not the networks inside a method (`pdae.estimator`, `diffae.model.encoder`,
    `latent.stats.mean.shape[0]`, `dpm.unet`)."""
    internals = {"estimator", "unet", "prior"}
    hits = []
    for f in sorted(EVAL_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            chain = ast.unparse(node)
            if node.attr in internals or ".model.encoder" in chain or chain.endswith("stats.mean.shape"):
                if not chain.startswith(("args.", "self.")):
                    hits.append(f"{f.name}:{node.lineno}: {chain}")
    assert hits == [], "eval/ reaches into a method's networks; ask a capability:\n" + "\n".join(sorted(set(hits)))


def test_capability_checks_of_eval_accept_what_the_name_checks_accepted(models):
    """The refactor keeps every model flag and check: the same methods pass as under the old name lists."""
    def accepted(test) -> set[str]:
        return {name for name, m in models.items() if test(m)}

    old = {"autoencoder": {"pdae", "diffae"}, "latent": {"latent"}, "classifier": {"classifier"}, "dpm": {"dpm"}}
    assert {flag: accepted(test) for flag, (test, _) in common.MODEL_KINDS.items()} == old
    assert accepted(common.is_image_decoder) == {"dpm", "pdae", "pdae_class", "diffae"}
    assert accepted(common.can_reconstruct) == {"dpm", "pdae", "diffae"}  # reconstruct, gap
    assert accepted(lambda m: m.has_encoder and m.has_shift) == {"pdae"}  # gap --pdae, the weighting ablation
    assert accepted(lambda m: m.has_encoder and not m.has_shift) == {"diffae"}  # gap --diffae
    assert accepted(lambda m: m.conditioning == "label") == {"pdae_class"}  # truncation
    # decode: the condition is refused / required exactly as before.
    image = accepted(common.is_image_decoder)
    assert {n for n in image if models[n].conditioning == "none"} == {"dpm"}
    assert {n for n in image if not models[n].condition_optional} == {"diffae", "pdae_class"}


# ------------------------------------------------------------------------------------------------
# predict_eps: the eps estimates of the posterior-mean gap.


def _inputs(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, 1, 8, 8, generator=g), torch.tensor([0, 17, 49][:n])


def test_predict_eps_of_the_plain_and_latent_dpms_is_their_eps(models):
    x_t, t = _inputs()
    pred = models["dpm"].predict_eps(x_t, t)
    assert isinstance(pred, EpsPrediction) and pred.shift is None and pred.eps_hat is pred.eps
    torch.testing.assert_close(pred.eps, models["dpm"].denoiser()[0](x_t, t), rtol=0, atol=0)
    z_t = torch.randn(3, LATENT_DIM, generator=torch.Generator().manual_seed(8))
    lat = models["latent"].predict_eps(z_t, t)
    assert lat.shift is None and lat.eps.shape == z_t.shape
    torch.testing.assert_close(lat.eps, models["latent"].net(z_t, t), rtol=0, atol=0)


def test_predict_eps_of_pdae_is_the_training_form_eps_theta_plus_shift_coef_G(models):
    pdae, (x_t, t) = models["pdae"], _inputs()
    z = torch.randn(3, LATENT_DIM, generator=torch.Generator().manual_seed(9))
    pred = pdae.predict_eps(x_t, t, z)
    eps, g = pdae.estimator(x_t, t, z)
    torch.testing.assert_close(pred.eps, eps, rtol=0, atol=0)
    torch.testing.assert_close(pred.shift, g, rtol=0, atol=0)
    torch.testing.assert_close(pred.eps_hat, shift_eps(pdae.schedule, t, eps, g), rtol=0, atol=0)  # paper Eq. 7
    assert float(g.abs().max()) > 0 and not torch.equal(pred.eps_hat[1:], pred.eps[1:])
    torch.testing.assert_close(pred.eps_hat[0], pred.eps[0], rtol=0, atol=0)  # shift_coef_0 = 0
    # Without z: the frozen prior alone, the very DPM it was built on.
    prior = pdae.predict_eps(x_t, t)
    assert prior.shift is None
    torch.testing.assert_close(prior.eps, models["dpm"].predict_eps(x_t, t).eps, rtol=0, atol=0)
    torch.testing.assert_close(prior.eps, pred.eps, rtol=1e-6, atol=1e-6)
    # The class-conditional PDAE: the same form, conditioned on labels.
    pc, y = models["pdae_class"], torch.tensor([0, 4, 9])
    pred_c = pc.predict_eps(x_t, t, y)
    eps_c, g_c = pc.estimator(x_t, t, y)
    torch.testing.assert_close(pred_c.eps_hat, shift_eps(pc.schedule, t, eps_c, g_c), rtol=0, atol=0)


def test_predict_eps_of_diffae_is_its_conditional_eps_and_needs_z(models):
    diffae, (x_t, t) = models["diffae"], _inputs()
    z = diffae.encode(torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(10)) * 2 - 1)
    pred = diffae.predict_eps(x_t, t, z)
    assert pred.shift is None and pred.eps_hat is pred.eps
    torch.testing.assert_close(pred.eps, diffae.model(x_t, t, z), rtol=0, atol=0)
    with pytest.raises(ValueError, match="semantic latent z"):
        diffae.predict_eps(x_t, t)


def test_models_that_are_not_diffusion_models_have_no_eps(models):
    x_t, t = _inputs()
    for name in ("classifier", "feature_net"):
        with pytest.raises(NotImplementedError, match="not a diffusion decoder"):
            models[name].predict_eps(x_t, t)


# ------------------------------------------------------------------------------------------------
# DDIM encoding and decoding side by side (eval.ddim_codec), reached through capabilities only.


def test_ddim_encode_and_decode_live_in_one_module_and_keep_their_old_names(models):
    from eval import ddim_codec, reconstruct, sample

    assert reconstruct.infer_x_T is ddim_codec.infer_x_T
    assert sample.decode is reconstruct.decode is ddim_codec.decode
    assert sample.model_device is ddim_codec.model_device
    x0 = torch.rand(3, INFO["channels"], INFO["image_size"], INFO["image_size"]) * 2 - 1
    for name in ("dpm", "pdae", "diffae"):
        m = models[name]
        z = m.encode(x0) if m.has_encoder else None
        x_T = ddim_codec.infer_x_T(m, x0, z, 5, batch_size=2)
        assert x_T.shape == x0.shape and torch.isfinite(x_T).all(), name
        rec = ddim_codec.decode(m, z, x_T, 5, batch_size=2)
        assert rec.shape == x0.shape and torch.isfinite(rec).all(), name
    with pytest.raises(ValueError, match="needs z"):
        ddim_codec.infer_x_T(models["pdae"], x0, None, 5)
    with pytest.raises(ValueError, match="needs a condition"):
        ddim_codec.decode(models["diffae"], None, x0, 5)
    with pytest.raises(ValueError, match="takes no"):
        ddim_codec.decode(models["dpm"], torch.zeros(3, LATENT_DIM), x0, 5)
