"""eval.claims / eval.health: verdicts from intervals, health and convergence gates, on synthetic records."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from eval import claims as C
from eval import health as H
from eval.common import write_records

PROV = {"dataset": "digits", "code_version": "abc", "images_seen": 1000, "backend": "domain"}


def rec(table: str, metric: str, value: float, seed: int, method: str, **cols: object) -> dict:
    return {**PROV, "config": f"results/digits/{method}/seed{seed}/model", "seed": seed, "eval_seed": seed,
            "table": table, "method": method, **cols, "metric": metric, "value": float(value)}


def unit_rec(table: str, metric: str, values: np.ndarray, seed: int, method: str, **cols: object) -> dict:
    return rec(table, metric, float(np.mean(values)), seed, method, values=[float(v) for v in values],
               units="images", **cols)


def recon_records(pdae_ssim: float, diffae_ssim: float, seeds=(0, 1, 2), n=200, noise=0.05, floor=0.3,
                  steps=100) -> list[dict]:
    """Random-x_T SSIM/MSE per image for PDAE and Diff-AE (same images: a shared per-image difficulty)."""
    rows = []
    for s in seeds:
        rng = np.random.default_rng(s)
        difficulty = rng.normal(0, 0.1, size=n)
        for method, level in (("pdae", pdae_ssim), ("diffae", diffae_ssim)):
            ssim = np.clip(level + difficulty + rng.normal(0, noise, size=n), 0, 1)
            cols = dict(steps=steps, sampler="ddim", x_T="random", encode_steps="-")
            rows.append(unit_rec("recon", "ssim", ssim, s, method, **cols))
            rows.append(unit_rec("recon", "mse", (1 - ssim) * 0.1, s, method, **cols))
        rows.append(unit_rec("recon", "ssim", np.clip(floor + difficulty, 0, 1), s, "unrelated", steps="-", x_T="-"))
    return rows


def convergence(method: str, converged: str, seeds=(0, 1, 2)) -> list[dict]:
    return [rec("convergence", "plateau_change", 0.001 if converged == "yes" else 0.05, s, method,
                quality_metric="ssim", tolerance=0.01, converged=converged, window_images="[30000, 40000]")
            for s in seeds]


def latent_records(method: str, std: float, seeds=(0, 1, 2)) -> list[dict]:
    out = []
    for s in seeds:
        out.append(rec("uncond", "latent_std", std, s, method, steps=20))
        out.append(rec("uncond", "latent_mean_abs", 0.05, s, method, steps=20))
    return out


def one(rows: list[dict], key: str, **where: str) -> dict:
    matches = [c for c in C.claims(rows)[0] if c["claim"] == C.CLAIMS[key].key
               and all(str(c[k]) == v for k, v in where.items())]
    assert len(matches) == 1, matches
    return matches[0]


# ---------------------------------------------------------------------------------------------- verdict rules

def test_verdict_rules() -> None:
    assert C.verdict_better(0.1, 0.3)[0] == "reproduced"
    assert C.verdict_better(-0.3, -0.1)[0] == "not reproduced"
    assert C.verdict_better(-0.1, 0.1)[0] == "inconclusive"
    assert C.verdict_on_par(-0.01, 0.02, 0.02)[0] == "reproduced"
    assert C.verdict_on_par(-0.05, -0.03, 0.02)[0] == "not reproduced"
    assert C.verdict_on_par(-0.03, 0.0, 0.02)[0] == "inconclusive"
    assert C.verdict_at_most(0.3, 0.45, 0.5)[0] == "reproduced"
    assert C.verdict_at_most(0.6, 0.9, 0.5)[0] == "not reproduced"
    assert C.verdict_at_most(0.4, 0.6, 0.5)[0] == "inconclusive"


def test_gates_order_and_direction() -> None:
    assert C.gated("reproduced", "x", C.Gate(2))[0] == "inconclusive"
    assert C.gated("reproduced", "x", C.Gate(3, unhealthy=["bad"]))[1].startswith("unhealthy model")
    both = C.gated("reproduced", "x", C.Gate(1, unhealthy=["bad"]))[1]
    assert "1 seed(s) < 3" in both and "unhealthy model: bad" in both and "interval alone: reproduced" in both
    # A baseline that has not converged invalidates a win against it, not a loss.
    assert C.gated("reproduced", "x", C.Gate(3, baseline_not_converged=["b"]))[1].startswith("budget-limited")
    assert C.gated("not reproduced", "x", C.Gate(3, baseline_not_converged=["b"]))[0] == "not reproduced"
    # A proponent that has not converged invalidates its loss, not its win.
    assert C.gated("not reproduced", "x", C.Gate(3, proponent_not_converged=["p"]))[0] == "inconclusive"
    assert C.gated("reproduced", "x", C.Gate(3, proponent_not_converged=["p"]))[0] == "reproduced"


# ---------------------------------------------------------------------------------------------- health

def test_latent_health_flags_an_exported_initialisation() -> None:
    health = H.health_rows(latent_records("pdae", 31.0) + latent_records("diffae", 1.05))
    status = {(h["model"], h["seed"]): h["status"] for h in health if h["check"] == "latent"}
    assert set(status.values()) == {"unhealthy", "healthy"}
    assert all(v == "unhealthy" for (m, _), v in status.items() if m.startswith("pdae"))
    ok, reasons = H.status_of(health, "digits", "pdae_samples", ("latent",))
    assert ok is False and "std 31" in reasons[0]
    assert H.status_of(health, "digits", "diffae_samples", ("latent",)) == (True, [])
    assert H.status_of(health, "digits", "ddim", ("samples",))[0] is None


def test_z_use_health_against_the_unrelated_floor() -> None:
    rows = recon_records(0.8, 0.32)  # Diff-AE at the floor (0.3): z unused
    health = [h for h in H.health_rows(rows) if h["check"] == "z_used"]
    by_model = {h["model"] for h in health if h["status"] == "unhealthy"}
    assert by_model == {"diffae autoencoder"} and len(health) == 6


def test_sample_health_uses_the_real_confident_fraction() -> None:
    rows = [rec("uncond", "confident", 0.9, 0, "real", steps="-"),
            rec("uncond", "confident", 0.8, 0, "ddim", steps=20), rec("uncond", "confident", 0.1, 0, "ddim", steps=10),
            rec("uncond", "confident", 0.2, 0, "pdae", steps=20)]
    health = {h["model"]: h for h in H.health_rows(rows) if h["check"] == "samples"}
    assert health["pre-trained DPM"]["status"] == "healthy"       # judged at the largest T
    assert health["pdae decoder (via its latent DPM)"]["status"] == "unhealthy"


# ---------------------------------------------------------------------------------------------- claims

def test_on_par_reproduced_between_healthy_converged_models() -> None:
    rows = recon_records(0.80, 0.79) + convergence("pdae", "yes") + convergence("diffae", "yes")
    c = one(rows, "recon_random")
    assert c["verdict"] == "reproduced" and c["n_seeds"] == 3
    assert c["ci_low"] < c["estimate"] < c["ci_high"]
    assert c["estimate"] == pytest.approx(0.01, abs=0.01)


def test_win_against_a_baseline_that_has_not_converged_is_budget_limited() -> None:
    rows = recon_records(0.80, 0.60) + convergence("pdae", "yes") + convergence("diffae", "no")
    c = one(rows, "recon_random")
    assert c["verdict"] == "inconclusive" and c["reason"].startswith("budget-limited")


def test_clear_loss_of_a_converged_pdae_is_not_reproduced() -> None:
    rows = recon_records(0.60, 0.80) + convergence("pdae", "yes") + convergence("diffae", "yes")
    assert one(rows, "recon_random")["verdict"] == "not reproduced"
    rows = recon_records(0.60, 0.80) + convergence("pdae", "no") + convergence("diffae", "yes")
    assert one(rows, "recon_random")["verdict"] == "inconclusive"


def test_overlapping_intervals_are_inconclusive_and_one_seed_is_never_enough() -> None:
    # Difference 0.02 = the margin, with per-image noise: the interval straddles -margin... use a loss of 0.02.
    rows = recon_records(0.78, 0.80, n=60, noise=0.2) + convergence("pdae", "yes") + convergence("diffae", "yes")
    assert one(rows, "recon_random")["verdict"] == "inconclusive"
    rows = recon_records(0.80, 0.79, seeds=(0,)) + convergence("pdae", "yes", (0,)) + convergence("diffae", "yes", (0,))
    c = one(rows, "recon_random")
    assert c["verdict"] == "inconclusive" and "1 seed(s) < 3" in c["reason"]


def test_unhealthy_model_makes_a_claim_inconclusive() -> None:
    rows = recon_records(0.80, 0.32) + convergence("pdae", "yes") + convergence("diffae", "yes")
    c = one(rows, "recon_random")
    assert c["verdict"] == "inconclusive" and "diffae autoencoder seed" in c["reason"]


def test_sanity_row_is_not_a_claim() -> None:
    rows = recon_records(0.8, 0.8)
    for r in rows:
        if r["method"] == "diffae":
            r["method"] = "ddim"
    sanity = [c for c in C.claims(rows)[0] if c["kind"] == "sanity"]
    assert sanity and sanity[0]["verdict"] in ("passed", "failed")


def gap_records(ratio: float, seeds=(0, 1, 2), n=100, T=1000) -> list[dict]:
    rows = []
    for s in seeds:
        rng = np.random.default_rng(s)
        base = rng.gamma(2.0, 1.0, size=n)
        for t in range(0, T, 100):
            scale = 0.0 if t == 0 else (t / T) ** 2
            d = base * scale + 1e-6
            p = d if t == 0 else d * ratio * rng.uniform(0.9, 1.1, size=n)
            rows.append(unit_rec("gap", "gap", d, s, "dpm", t=t, T=T))
            rows.append(unit_rec("gap", "gap", p, s, "pdae", t=t, T=T))
    return rows


def test_gap_reduction_interval_and_fraction_of_t() -> None:
    c = one(gap_records(0.5), "gap")
    assert c["verdict"] == "reproduced"
    assert c["estimate"] == pytest.approx(0.5, abs=0.02) and c["ci_low"] < 0.5 < c["ci_high"]
    assert "significantly lower at 9/9 t >= 1" in c["evidence"]  # t = 0 (shift 0) is not counted
    assert one(gap_records(1.3), "gap")["verdict"] == "not reproduced"


def fid_records(method: str, fid: float, steps: int = 10, seeds=(0, 1, 2), spread: float = 0.5) -> list[dict]:
    out = []
    for s in seeds:
        rng = np.random.default_rng([100 + s, sum(map(ord, method))])  # independent sampling errors per method
        reps = fid + rng.normal(0, spread, size=200)
        out.append(rec("uncond", "fid", fid, s, method, steps=steps, values=reps.tolist(), units="bootstrap",
                       n_samples=1000))
    return out


def test_uncond_fid_claim_from_bootstrap_replicates() -> None:
    rows = fid_records("pdae", 5.0) + fid_records("ddim", 8.0) + fid_records("diffae", 5.2)
    assert one(rows, "uncond_ddim", setting="T=10")["verdict"] == "reproduced"
    assert one(rows, "uncond_diffae", setting="T=10")["verdict"] == "inconclusive"  # 0.2 apart, spread 0.5
    # An unhealthy latent DPM behind PDAE's samples: inconclusive whatever the FID.
    c = one(rows + latent_records("pdae", 31.0), "uncond_ddim", setting="T=10")
    assert c["verdict"] == "inconclusive" and "latent" in c["reason"]


def test_efficiency_ratio_needs_converged_models() -> None:
    ratio = [rec("efficiency", "images_ratio", v, s, "pdae", quality_metric="ssim", reached="yes")
             for s, v in enumerate([0.3, 0.35, 0.4])]
    rows = ratio + convergence("pdae", "yes") + convergence("diffae", "yes")
    assert one(rows, "efficiency")["verdict"] == "reproduced"
    c = one(ratio + convergence("pdae", "yes") + convergence("diffae", "no"), "efficiency")
    assert c["verdict"] == "inconclusive" and c["reason"].startswith("budget-limited")


def test_cli_writes_claims_and_health(tmp_path: Path) -> None:
    rows = recon_records(0.8, 0.79) + convergence("pdae", "yes") + convergence("diffae", "yes")
    path = write_records(tmp_path / "r.json", rows)
    parser = argparse.ArgumentParser()
    C.register_cli(parser.add_subparsers())
    args = parser.parse_args(["claims", "--records", str(path), "--out-dir", str(tmp_path / "t")])
    assert args.func(args) == 0
    md = (tmp_path / "t" / "claims.md").read_text()
    assert "| random-x_T reconstruction on par with Diff-AE | digits | DDIM T=100 | reproduced |" in md
    assert "paper §4.3, Table 1" in md
    health = (tmp_path / "t" / "health.md").read_text()
    assert "| digits | pdae autoencoder | 0 | z_used |" in health


def test_latent_health_on_real_latent_dpms_untrained_fails_trained_passes() -> None:
    """An untrained latent DPM (what an EMA exporting its initialisation amounts to) fails the latent check; the
    same network trained briefly on its data passes. Data: z ~ N(0, I) (already normalised)."""
    import torch

    from eval.sample import latent_health, latent_noise, sample_latents
    from pdae.diffusion.schedule import Schedule
    from pdae.methods.latent import LatentDPM
    from pdae.nets.latent_mlp import LatentMLP
    from pdae.training import adam_optimizer

    torch.manual_seed(0)
    dim = 8
    latent = LatentDPM(LatentMLP(latent_dim=dim, hidden=64, num_layers=3, time_dim=32, time_out=32),
                       Schedule.from_dict({"kind": "const", "T": 1000, "beta": 0.008}), dim)

    def rows(model: LatentDPM) -> list[dict]:
        z = sample_latents(model.eval(), 500, 20, z_T=latent_noise(500, dim, seed=0))
        moments = latent_health(model, z)
        return [rec("uncond", m, v, s, "pdae", steps=20) for s in range(3) for m, v in moments.items()]

    untrained = [h for h in H.health_rows(rows(latent)) if h["check"] == "latent"]
    assert untrained and all(h["status"] == "unhealthy" for h in untrained) and untrained[0]["value"] > 2
    gen = torch.Generator().manual_seed(0)
    opt = adam_optimizer(latent.trainable_parameters(), 3e-3)
    latent.train()
    for _ in range(400):
        loss = latent.loss(torch.randn(256, dim, generator=gen), None, gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = [h for h in H.health_rows(rows(latent)) if h["check"] == "latent"]
    assert all(h["status"] == "healthy" for h in trained), trained[0]["detail"]


def test_convergence_status_reads_converged_or_not() -> None:
    health = H.health_rows(convergence("pdae", "yes") + convergence("diffae", "no"))
    assert {h["status"] for h in health if h["model"].startswith("pdae")} == {"converged"}
    assert {h["status"] for h in health if h["model"].startswith("diffae")} == {"not converged"}
    assert H.status_of(health, "digits", "diffae", ("converged",))[0] is False
    assert H.status_of(health, "digits", "pdae", ("converged",)) == (True, [])
