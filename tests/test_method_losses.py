"""Golden training losses of every method on tiny fixed inputs and a fixed generator, and the losses recomputed
independently from the equations (the DPM's L_simple, Ho et al. 2020; PDAE's weighted shifted-eps loss,
paper Eq. 7 and Eq. 10; the latent DPM's L1 on eps).

The golden numbers were computed with the code before `Method.loss` was split into `draw` + `loss_from`
(commit bd85277) and are unchanged by it; a change to any method's loss, to the order of its random draws or
to the tiny networks' initialisation shows up here.
"""

from __future__ import annotations

import math

import pytest
import torch

from pdae.diffusion.gaussian import extract, pdae_loss_weight, q_sample, shift_eps
from pdae.methods import Method, build_method
from tests.test_eval_sample import INFO, LATENT_DIM, tiny_models

GOLDEN = {
    "classifier": [2.7397401332855225, 2.822864055633545, 2.2879884243011475, 2.330764055252075],
    "diffae": [1.193571925163269, 1.7277958393096924, 1.3515567779541016, 1.0333880186080933],
    "dpm": [1.2998872995376587, 1.5963284969329834, 1.4403865337371826, 1.4026377201080322],
    "feature_net": [2.2937822341918945, 2.4996747970581055, 2.259026288986206, 2.498575210571289],
    "latent": [0.6193134188652039, 0.8489022254943848, 0.8325262069702148, 0.6790685057640076],
    "pdae": [0.28405866026878357, 0.41933733224868774, 0.004177372436970472, 0.04767663776874542],
    "pdae_class": [0.2723347246646881, 0.4214622974395752, 0.00417913356795907, 0.04546642675995827],
    "pdae_uniform": [1.2815316915512085, 1.5410484075546265, 1.440782070159912, 1.3813788890838623]
}


def _redraw_zero_weights(module: torch.nn.Module, g: torch.Generator) -> None:
    """The zero-initialised output layers get N(0, 1/fan_in) weights, so every network's output matters."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))


@pytest.fixture(scope="module")
def models() -> dict[str, Method]:
    m = tiny_models(0)
    torch.manual_seed(5)
    m["pdae_uniform"] = build_method(
        "pdae", {"encoder": {"latent_dim": LATENT_DIM, "channels": [32], "attention_resolutions": []},
                 "estimator": {"latent_dim": LATENT_DIM}}, {"weighting": "uniform"}, {}, INFO, prior=m["dpm"])
    m["pdae_class"] = build_method("pdae_class", {"estimator": {}}, {}, {}, INFO, prior=m["dpm"])
    m["classifier"] = build_method("classifier", {"head": {}}, {"targets": "labels"}, {}, INFO, encoder=m["pdae"])
    g = torch.Generator().manual_seed(11)
    for k in sorted(m):
        _redraw_zero_weights(m[k], g)
        m[k].eval()
    return m


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    z = torch.randn(4, LATENT_DIM, generator=g)
    return {"images": x, "latents": z, "y": torch.tensor([3, 1, 4, 1])}


def _input(method: Method, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return inputs[method.input_kind]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_loss_matches_golden_values(models: dict[str, Method], inputs: dict[str, torch.Tensor], name: str) -> None:
    m = models[name]
    with torch.no_grad():
        loss = m.loss(_input(m, inputs), inputs["y"], torch.Generator().manual_seed(123))
    torch.testing.assert_close(loss, torch.tensor(GOLDEN[name]), rtol=2e-5, atol=1e-6)
    # forward with the draws made beforehand is the same loss (what the training step runs)
    with torch.no_grad():
        draws = m.draw(_input(m, inputs), torch.Generator().manual_seed(123))
        assert torch.equal(m(_input(m, inputs), inputs["y"], draws), loss)


def test_draw_order_is_t_then_noise_from_the_generator(models: dict[str, Method], inputs: dict[str, torch.Tensor]) -> None:
    x = inputs["images"]
    draws = models["dpm"].draw(x, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    t = torch.randint(0, models["dpm"].schedule.T, (4,), generator=g)
    assert torch.equal(draws["t"], t) and torch.equal(draws["noise"], torch.randn(x.shape, generator=g))
    assert models["classifier"].draw(inputs["latents"], g) == {}


def test_pdae_loss_is_weighted_error_of_the_shifted_eps(models: dict[str, Method], inputs: dict[str, torch.Tensor]) -> None:
    """PDAE paper Eq. 10: lambda_t * ||eps - eps_hat||^2 with eps_hat = eps_theta + shift_coef_t * G (Eq. 7),
    here through `predict_eps` / `shift_eps`, and the SNR weighting lambda_t = SNR^gamma / (1 + SNR), gamma 0.1."""
    for name, weighted in (("pdae", True), ("pdae_uniform", False)):
        m, x = models[name], inputs["images"]
        draws = m.draw(x, torch.Generator().manual_seed(4))
        t, noise = draws["t"], draws["noise"]
        with torch.no_grad():
            x_t = q_sample(m.schedule, x, t, noise)
            pred = m.predict_eps(x_t, t, m.encode(x))
            assert torch.allclose(pred.eps_hat, shift_eps(m.schedule, t, pred.eps, pred.shift), atol=1e-6)
            err = ((noise - pred.eps_hat) ** 2).reshape(4, -1).mean(1)
            weight = extract(pdae_loss_weight(m.schedule, 0.1).float(), t, (4,)) if weighted else torch.ones(4)
            torch.testing.assert_close(m.loss_from(x, inputs["y"], draws), weight * err, rtol=1e-5, atol=1e-7)


def test_dpm_and_latent_losses_from_the_equations(models: dict[str, Method], inputs: dict[str, torch.Tensor]) -> None:
    dpm, latent = models["dpm"], models["latent"]
    for m, x, power in ((dpm, inputs["images"], 2), (latent, inputs["latents"], 1)):
        draws = m.draw(x, torch.Generator().manual_seed(2))
        with torch.no_grad():
            eps_fn, _ = m.denoiser()
            eps = eps_fn(q_sample(m.schedule, x, draws["t"], draws["noise"]), draws["t"])
            expected = (draws["noise"] - eps).abs().pow(power).reshape(len(x), -1).mean(1)
            torch.testing.assert_close(m.loss_from(x, inputs["y"], draws), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["dpm", "pdae", "diffae", "latent"])
def test_training_forward_traces_as_one_graph(models: dict[str, Method], inputs: dict[str, torch.Tensor], name: str) -> None:
    """What `train.compile` compiles (the forward given the step's draws) has no graph break (torch.compile)."""
    m = models[name]
    x = _input(m, inputs)
    draws = m.draw(x, torch.Generator().manual_seed(0))
    explained = torch._dynamo.explain(m)(x, inputs["y"], draws)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
