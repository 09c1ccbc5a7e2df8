"""The posterior-mean gap over t (PDAE Fig. 1/5 right), denoising in one step (Fig. 5 left) and the learned shift G.

Paper Fig. 1 and Fig. 5 right (official `sampler/gap_measure.py`): for x_t = q_sample(x0, t, eps) the gap of an eps
estimate is the per-element MSE between the true posterior mean mu~_t(x0, x_t) and the posterior mean at the
predicted x0_hat(eps_estimate) (no clipping):

    gap_DPM    eps_theta(x_t, t)                       (the pre-trained DPM)
    gap_PDAE   eps_theta(x_t, t) + shift_coef_t G(x_t, z, t), z = E(x0)   (training coefficient, paper Eq. 7)
    gap_DiffAE eps(x_t, t, z), z = E(x0)

Deviation from the official code (`gap_measure.py`): the noise is Gaussian N(0, I); the official code draws
`torch.rand_like` (uniform [0, 1)), most likely by mistake. Like the official code the gap is a per-element
mean (not the summed squared norm of the paper) and images may be drawn with replacement.

Pairing: within one job every method sees the same images, the same noise and therefore the same x_t at a given t
(x_t is computed once per (t, batch) and handed to every model; their schedules must agree). Each `gap` record
carries `values`, the per-image gap (image i of the draw), and `units` "images"; `value` is their mean.

Fig. 5 left: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) with eps_hat = eps_theta or
eps_theta + shift_coef G, at t in {400, ..., 800} (scaled to T). Appendix C.6: G(x_t, z, t) itself.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from eval import common, metrics
from eval.sample import model_device, write_arrays
from pdae.diffusion.gaussian import posterior_mean, q_sample, x0_from_eps
from pdae.diffusion.schedule import Schedule
from pdae.methods.base import EpsPrediction
from pdae.progress import track

# Small timesteps added to the every-`stride` grid (the gap changes fastest near t = 0).
SMALL_TIMESTEPS = (1, 2, 5)
# Timesteps of the paper's denoise-in-one-step figure (Fig. 5 left), for T = 1000.
ONE_STEP_TIMESTEPS = (400, 500, 600, 700, 800)
# Timesteps of the shift pictures (appendix C.6), for T = 1000.
SHIFT_TIMESTEPS = (50, 200, 400, 600, 800, 950)
# Seed offset of the gap's noise stream (one Gaussian draw per (seed, t)).
GAP_NOISE_STRIDE = 100_003

NOTES = (
    "Posterior-mean gap (paper Fig. 1, Fig. 5 right): per-element mean of (mu~(x0, x_t) - mu~(x0_hat(eps_est), x_t))^2 "
    "over channels and pixels per image ('values', units 'images'), averaged over images ('value'), no clipping. "
    "DEVIATION: Gaussian noise N(0,I); the official gap_measure.py uses "
    "torch.rand_like (uniform [0,1)), so absolute values differ from the published Fig. 5. The same images, noise "
    "and x_t are used for every method at a given t (paired per image). PDAE: eps_theta + shift_coef_t G with the "
    "training coefficient shift_coef_t = -sqrt(alpha_t)(1 - alpha_bar_{t-1})/sqrt(1 - alpha_bar_t)."
)


# Posterior-mean gap of one eps estimate (PDAE Eq. 4-5, Fig. 5 right).
def posterior_mean_gap(schedule: Schedule, x0: Tensor, t: Tensor, noise: Tensor, eps: Tensor) -> Tensor:
    """Per-image mean over elements of (mu~_t(x0, x_t) - mu~_t(x0_hat, x_t))^2, computed in float64.

    x_t = q_sample(x0, t, noise); x0_hat = x0_from_eps(x_t, t, eps) (no clipping).
    Closed form: (beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)))^2 * mean((eps - noise)^2) (see `gap_eps_coef`).

    Args:
        x0, noise, eps: [N, ...]; t: [N] int64 timesteps.
    Returns:
        float64  # [N]
    """
    if not (x0.shape == noise.shape == eps.shape):
        raise ValueError(f"x0, noise and eps must have one shape, got {tuple(x0.shape)}, {tuple(noise.shape)}, "
                         f"{tuple(eps.shape)}")
    x0, noise, eps = x0.double(), noise.double().to(x0.device), eps.double().to(x0.device)
    t = t.to(x0.device)
    x_t = q_sample(schedule, x0, t, noise)
    mu_true = posterior_mean(schedule, x0, x_t, t)
    mu_pred = posterior_mean(schedule, x0_from_eps(schedule, x_t, t, eps), x_t, t)
    return (mu_true - mu_pred).pow(2).reshape(x0.shape[0], -1).mean(dim=1)


def gap_eps_coef(schedule: Schedule) -> Tensor:
    """The eps coefficient of the posterior mean, beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)); float64 [T].

    mu~(x0_hat(eps)) is linear in eps with this coefficient (it equals DDPM's mu_theta), so an eps error e gives
    gap = coef_t^2 mean(e^2).
    """
    return schedule.betas / (schedule.alphas.sqrt() * (1.0 - schedule.alpha_bar).sqrt())


def default_timesteps(T: int, stride: int = 10, extra: tuple[int, ...] = SMALL_TIMESTEPS) -> list[int]:
    """Every `stride`-th t (0, stride, ...), the last step T-1, and the small timesteps `extra` (< T)."""
    if stride < 1:
        raise ValueError(f"timestep stride must be >= 1, got {stride}")
    return sorted(set(range(0, T, stride)) | {T - 1} | {t for t in extra if 0 <= t < T})


def scale_timesteps(timesteps: tuple[int, ...] | list[int], T: int, reference_T: int = 1000) -> list[int]:
    """Timesteps given for T = reference_T mapped to a schedule of T steps: int(t * T / reference_T)."""
    return [min(int(t * T / reference_T), T - 1) for t in timesteps]


def check_timesteps(timesteps: list[int], T: int) -> None:
    bad = [t for t in timesteps if not 0 <= int(t) < T]
    if bad:
        raise ValueError(f"timesteps must lie in [0, {T - 1}], got {bad[:5]}")


def select_indices(num_source: int, n: int, sampling: str, seed: int) -> np.ndarray:
    """Image indices: "replace" draws n with replacement (seeded numpy Generator, as the official
    `np.random.choice(..., True)`), "first" takes the first min(n, num_source)."""
    if n < 1:
        raise ValueError(f"--num-images must be >= 1, got {n}")
    if sampling == "replace":
        return np.random.default_rng(seed).choice(num_source, size=n, replace=True)
    if sampling == "first":
        return np.arange(min(n, num_source))
    raise ValueError(f"--sampling: expected replace or first, got {sampling!r}")


def gap_noise(shape: tuple[int, ...], t: int, seed: int) -> Tensor:
    """Gaussian noise [*shape] for timestep t (one CPU generator per (seed, t))."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * GAP_NOISE_STRIDE + int(t)))


# The eps estimate of each method, as a function of (x_t, t, z of the batch).
EpsEstimate = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


class GapModel(NamedTuple):
    """A model whose gap is measured: its method (schedule, encoder), eps estimate, and whether it needs z = E(x0)."""

    method: Any
    estimate: EpsEstimate
    conditional: bool


def gap_model(method: Any) -> GapModel:
    """The eps whose posterior mean the gap measures, `method.predict_eps(x_t, t, z).eps_hat`: DPM eps_theta;
    PDAE eps_theta + shift_coef_t G (the coefficient of the training loss, paper Eq. 7); Diff-AE its conditional
    eps(x_t, t, z). z = E(x0) for a model with an encoder, None for the plain DPM."""
    if not common.can_reconstruct(method):
        raise ValueError(f"the gap is defined for dpm, pdae and diffae models, got {method.name!r}")
    return GapModel(method, lambda x_t, t, z: method.predict_eps(x_t, t, z).eps_hat, bool(method.has_encoder))


def prior_gap_model(pdae: Any) -> GapModel:
    """eps_theta of the frozen prior inside a PDAE model (the DPM the paper compares against): its eps estimate
    without a condition."""
    return GapModel(pdae, lambda x_t, t, z: pdae.predict_eps(x_t, t).eps, False)


def pdae_gap_models(pdae: Any) -> dict[str, GapModel]:
    """{"dpm": the frozen prior, "pdae": eps_theta + shift_coef G} sharing one network pass per batch.

    Both use one `predict_eps(x_t, t, z)` (one pass of the estimator) for a given (x_t, t): the last result is
    reused when `measure_gap` asks the second model about the same inputs (checked with torch.equal).
    """
    last: dict[str, Any] = {}

    def both(x_t: Tensor, t: Tensor, z: Tensor | None) -> EpsPrediction:
        key = last.get("key")
        if key is None or key[0].shape != x_t.shape or not (torch.equal(key[0], x_t) and torch.equal(key[1], t)
                                                            and torch.equal(key[2], z)):
            last["key"], last["out"] = (x_t, t, z), pdae.predict_eps(x_t, t, z)
        return last["out"]

    return {
        "dpm": GapModel(pdae, lambda x_t, t, z: both(x_t, t, z).eps, True),
        "pdae": GapModel(pdae, lambda x_t, t, z: both(x_t, t, z).eps_hat, True),
    }


def shared_schedule(models: dict[str, GapModel]) -> Schedule:
    """The one noise schedule of all models (so that one x_t serves them all); ValueError if they differ."""
    first_label, first = next(iter(models.items()))
    ref = first.method.schedule
    for label, gm in models.items():
        sch = gm.method.schedule
        if sch.T != ref.T or not torch.allclose(sch.alpha_bar, ref.alpha_bar, rtol=1e-9, atol=0.0):
            raise ValueError(f"gap: {label} and {first_label} have different noise schedules, so they cannot share "
                             f"x_t (paired comparison)")
    return ref


def _codes(models: dict[str, GapModel], x0: Tensor, batch_size: int) -> dict[str, Tensor | None]:
    """z = E(x0) of every conditional model (on its device), None for the others."""
    zs: dict[str, Tensor | None] = {}
    for label, gm in models.items():
        dev = model_device(gm.method)
        zs[label] = (common.batched(lambda x: gm.method.encode(x.to(dev)), x0, batch_size=batch_size)
                     if gm.conditional else None)
    return zs


def _batch_gap(gm: GapModel, x0: Tensor, t: Tensor, noise: Tensor, x_t: Tensor, z: Tensor | None) -> Tensor:
    """Per-image gap (float64 [B], CPU) of one model on one batch, given the shared x_t (all CPU inputs)."""
    dev = model_device(gm.method)
    td = t.to(dev)
    eps = gm.estimate(x_t.to(dev), td, z)
    return posterior_mean_gap(gm.method.schedule, x0.to(dev), td, noise.to(dev), eps).cpu()


def measure_gap_per_image(
    models: dict[str, GapModel],
    x0: Tensor,
    timesteps: list[int],
    *,
    seed: int,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Per-image gap for each labelled model: {label: float64 [len(timesteps), N]}.

    x0: [N, C, H, W] in [-1, 1]. At each t the noise (`gap_noise`) is drawn once, x_t = q_sample(x0, t, noise) is
    computed once per batch with the shared schedule (`shared_schedule`) and given to every model, so entry
    [j, i] of every model refers to the same image, noise and x_t (paired comparison). z = E(x0) is computed once
    per conditional model.
    """
    schedule = shared_schedule(models)
    n = x0.shape[0]
    out = {label: torch.zeros(len(timesteps), n, dtype=torch.float64) for label in models}
    with torch.no_grad():
        zs = _codes(models, x0, batch_size)
        for j, tau in enumerate(track(timesteps, f"gap of {', '.join(models)} over t", "timesteps")):
            noise = gap_noise(tuple(x0.shape), tau, seed)
            for i in range(0, n, batch_size):
                xb, nb = x0[i : i + batch_size], noise[i : i + batch_size]
                t = torch.full((xb.shape[0],), int(tau), dtype=torch.long)
                x_t = q_sample(schedule, xb, t, nb)
                for label, gm in models.items():
                    z = zs[label][i : i + batch_size] if zs[label] is not None else None
                    out[label][j, i : i + xb.shape[0]] = _batch_gap(gm, xb, t, nb, x_t, z)
    return out


def measure_gap(
    models: dict[str, GapModel],
    x0: Tensor,
    timesteps: list[int],
    *,
    seed: int,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Mean gap over images per timestep for each labelled model: {label: float64 [len(timesteps)]}
    (the mean of `measure_gap_per_image`)."""
    per_image = measure_gap_per_image(models, x0, timesteps, seed=seed, batch_size=batch_size)
    return {label: gaps.mean(dim=1) for label, gaps in per_image.items()}


def gap_records(models: dict[str, GapModel], timesteps: list[int], per_image: dict[str, Tensor],
                eval_seed: int) -> list[dict[str, Any]]:
    """`gap` rows, one per (model, t): value = mean gap over images, `values` = per-image gaps, units "images"."""
    rows = []
    for label, gm in models.items():
        prov = common.provenance(gm.method, label, eval_seed=eval_seed)
        for j, tau in enumerate(timesteps):
            fields = metrics.per_image_fields(per_image[label][j])
            rows.append(common.record(prov, "gap", fields.pop("value"), "-", table="gap", t=int(tau),
                                      noise="gaussian", **fields))
    return rows


# Denoising in one step (PDAE Fig. 5 left).
def denoise_one_step(pdae: Any, x0: Tensor, timesteps: list[int], noise: Tensor) -> dict[str, Tensor]:
    """x_t and the one-step x0_hat from eps_theta and from eps_theta + shift_coef G (no clipping).

    x0, noise: [K, C, H, W] (the same noise at every t). Returns {"x_t", "x0_dpm", "x0_pdae"}: [K, len(t), C, H, W].
    """
    dev = model_device(pdae)
    x0, noise = x0.to(dev), noise.to(dev)
    rows: dict[str, list[Tensor]] = {"x_t": [], "x0_dpm": [], "x0_pdae": []}
    with torch.no_grad():
        z = pdae.encode(x0)
        for tau in timesteps:
            t = torch.full((x0.shape[0],), int(tau), dtype=torch.long, device=dev)
            x_t = q_sample(pdae.schedule, x0, t, noise)
            pred = pdae.predict_eps(x_t, t, z)
            rows["x_t"].append(x_t)
            rows["x0_dpm"].append(x0_from_eps(pdae.schedule, x_t, t, pred.eps))
            rows["x0_pdae"].append(x0_from_eps(pdae.schedule, x_t, t, pred.eps_hat))
    return {k: torch.stack(v, dim=1).float().cpu() for k, v in rows.items()}


# The learned mean shift itself (appendix C.6).
def shift_pictures(pdae: Any, x0: Tensor, timesteps: list[int], noise: Tensor) -> dict[str, Tensor]:
    """x_t and G(x_t, z, t), z = E(x0). x0, noise: [K, C, H, W]. -> {"x_t", "shift"}: [K, len(t), C, H, W]."""
    dev = model_device(pdae)
    x0, noise = x0.to(dev), noise.to(dev)
    rows: dict[str, list[Tensor]] = {"x_t": [], "shift": []}
    with torch.no_grad():
        z = pdae.encode(x0)
        for tau in timesteps:
            t = torch.full((x0.shape[0],), int(tau), dtype=torch.long, device=dev)
            x_t = q_sample(pdae.schedule, x0, t, noise)
            rows["x_t"].append(x_t)
            rows["shift"].append(pdae.predict_eps(x_t, t, z).shift)
    return {k: torch.stack(v, dim=1).float().cpu() for k, v in rows.items()}


def normalise_panels(x: Tensor) -> tuple[Tensor, Tensor]:
    """Scale every [C, H, W] panel of x [K, M, C, H, W] by its max |value| into [-1, 1] -> (scaled, scale [K, M])."""
    scale = x.abs().flatten(2).amax(dim=2).clamp_min(1e-12)
    return x / scale[..., None, None, None], scale


# ------------------------------------------------------------------------------------------------
# CLI: `python -m eval gap | denoise-one-step | shift-pictures`.


def _load_pdae(path: str, device: torch.device) -> Any:
    from pdae.checkpoint import load_method

    method = load_method(path, device)
    if not (method.has_encoder and method.has_shift):
        raise ValueError(f"{path}: expected a pdae model, got {method.name!r}")
    return method


def run_gap(args: argparse.Namespace) -> int:
    from pdae.data import build_dataset
    from pdae.checkpoint import load_method

    device = common.resolve_device(args.device)
    pdae = _load_pdae(args.pdae, device)
    if args.dpm:
        dpm = common.load_model(args.dpm, "dpm", device)
        models = {"dpm": gap_model(dpm), "pdae": gap_model(pdae)}
    else:
        models = pdae_gap_models(pdae)
    if args.diffae:
        diffae = load_method(args.diffae, device)
        if not diffae.has_encoder or diffae.has_shift:
            raise ValueError(f"{args.diffae}: --diffae must be a diffae model, got {diffae.name!r}")
        models["diffae"] = gap_model(diffae)
    T = pdae.schedule.T
    timesteps = args.timesteps if args.timesteps else default_timesteps(T, args.t_stride)
    check_timesteps(timesteps, T)
    spec = common.data_spec(pdae, args.data)
    ds = build_dataset(spec, split=args.split)
    idx = select_indices(len(ds), args.num_images, args.sampling, args.seed)
    x0 = torch.stack([ds[int(i)][0] for i in idx])
    per_image = measure_gap_per_image(models, x0, timesteps, seed=args.seed, batch_size=args.batch_size)
    rows = gap_records(models, timesteps, per_image, args.seed)
    common.write_records(
        args.out, rows, notes=NOTES, num_images=int(len(idx)), sampling=args.sampling, split=args.split,
        dpm_source=args.dpm or "prior of the PDAE model", noise_seed=args.seed,
        image_indices=[int(i) for i in idx],
    )
    return 0


def _figure_inputs(args: argparse.Namespace, pdae: Any) -> tuple[Tensor, list[int], Tensor, list[str]]:
    spec = common.data_spec(pdae, args.data)
    count = max(args.image_index) + 1
    images, _, ds = common.eval_images(spec, count)
    if images.shape[0] < count:
        raise ValueError(f"--image-index {count - 1} beyond the {images.shape[0]} held-out images")
    x0 = images[list(args.image_index)]
    T = pdae.schedule.T
    timesteps = scale_timesteps(args.timesteps, T)
    check_timesteps(timesteps, T)
    noise = common.image_noise(tuple(x0.shape[1:]), args.image_index, args.seed)
    names = [f"image {int(ds.source_indices[i])}" for i in args.image_index]
    return x0, timesteps, noise, names


def run_denoise_one_step(args: argparse.Namespace) -> int:
    device = common.resolve_device(args.device)
    pdae = _load_pdae(args.pdae, device)
    x0, timesteps, noise, names = _figure_inputs(args, pdae)
    res = denoise_one_step(pdae, x0, timesteps, noise)
    k, m = x0.shape[0], len(timesteps)
    grid = torch.stack([res[key] for key in ("x_t", "x0_dpm", "x0_pdae")], dim=1)  # [K, 3, M, C, H, W]
    grid = grid.reshape(k * 3, m, *x0.shape[1:]).clamp(-1.0, 1.0)
    err = torch.stack([((res[key] - x0[:, None]) / 2).pow(2).flatten(2).mean(2) for key in ("x0_dpm", "x0_pdae")],
                      dim=1)  # [K, 2, M] MSE on the [0, 1] scale, unclamped
    row_labels = [f"{n}: {r}" for n in names for r in ("x_t", "eps_theta", "eps_theta + shift")]
    write_arrays(args.out, {"grid": grid, "row_labels": row_labels, "col_labels": [f"t={t}" for t in timesteps],
                            "originals": x0, "mse": err, "timesteps": torch.tensor(timesteps)},
                 **common.provenance(pdae), figure="denoise_one_step", noise="gaussian", noise_seed=args.seed,
                 notes="Fig. 5 left: x0_hat from eps_theta vs eps_theta + shift_coef G, unclipped (the grid is "
                       "clamped to [-1,1] for display; 'mse' is on the [0,1] scale, unclamped).")
    return 0


def run_shift_pictures(args: argparse.Namespace) -> int:
    device = common.resolve_device(args.device)
    pdae = _load_pdae(args.pdae, device)
    x0, timesteps, noise, names = _figure_inputs(args, pdae)
    res = shift_pictures(pdae, x0, timesteps, noise)
    scaled, scale = normalise_panels(res["shift"])
    k, m = x0.shape[0], len(timesteps)
    grid = torch.stack([res["x_t"].clamp(-1.0, 1.0), scaled], dim=1).reshape(k * 2, m, *x0.shape[1:])
    row_labels = [f"{n}: {r}" for n in names for r in ("x_t", "G (scaled)")]
    write_arrays(args.out, {"grid": grid, "row_labels": row_labels, "col_labels": [f"t={t}" for t in timesteps],
                            "originals": x0, "shift": res["shift"], "shift_scale": scale,
                            "timesteps": torch.tensor(timesteps)},
                 **common.provenance(pdae), figure="shift_pictures", noise="gaussian", noise_seed=args.seed,
                 notes="Appendix C.6: G(x_t, z, t), z = E(x0); each G panel of the grid is divided by its max |G| "
                       "('shift_scale'); 'shift' holds the raw values.")
    return 0


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--data", default=None, help="dataset spec YAML (default: the model's training data)")


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("gap", help="posterior-mean gap per t (Fig. 1/5) for DPM, PDAE and Diff-AE")
    p.add_argument("--pdae", required=True, help="PDAE model folder")
    p.add_argument("--dpm", default=None, help="plain DPM folder (default: the PDAE's frozen prior, the same network)")
    p.add_argument("--diffae", default=None, help="Diff-AE model folder (optional)")
    p.add_argument("--timesteps", type=int, nargs="+", default=None,
                   help="explicit timesteps (default: every --t-stride-th t, T-1, and 1, 2, 5)")
    p.add_argument("--t-stride", type=int, default=10, help="default grid: every t-stride-th timestep")
    p.add_argument("--num-images", type=int, default=100, help="images per timestep (official: 1000)")
    p.add_argument("--sampling", choices=("replace", "first"), default="replace",
                   help="replace: draw with replacement (seeded, as the official code); first: the first N")
    p.add_argument("--split", choices=("train", "test", "all"), default="train",
                   help="images to measure on (official: the training set, FFHQ)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", required=True, help="records JSON")
    _device_args(p)
    p.set_defaults(func=run_gap)

    for name, func, default_t, help_text in (
        ("denoise-one-step", run_denoise_one_step, ONE_STEP_TIMESTEPS, "Fig. 5 left: x0_hat in one step, DPM vs PDAE"),
        ("shift-pictures", run_shift_pictures, SHIFT_TIMESTEPS, "appendix C.6: the learned mean shift G at several t"),
    ):
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument("--pdae", required=True, help="PDAE model folder")
        p.add_argument("--timesteps", type=int, nargs="+", default=list(default_t),
                       help="timesteps for T = 1000 (scaled to the model's T)")
        p.add_argument("--image-index", type=int, nargs="+", default=[0, 1, 2, 3], help="held-out image positions")
        p.add_argument("--out", required=True, help="NPZ grid (+ JSON sidecar)")
        _device_args(p)
        p.set_defaults(func=func)
