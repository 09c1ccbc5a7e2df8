"""Autoencoding reconstruction (PDAE Table 1, Fig. 6): PDAE, Diff-AE and plain DDIM on a fixed held-out set.

Protocol of paper §4.3 (Table 1) and the official evaluation scripts (PDAE `sampler/autoencoding_eval.py`,
Diff-AE `metrics.py`): DDIM decoding / encoding with the mean shift (paper Eq. 6-8), both respacing
conventions, stochastic DDPM decoding (Fig. 6). For every image x0 of the evaluation set:

    z = E(x0)                       once (PDAE, Diff-AE; the plain DPM has no z)
    x_T "random"                    x_T ~ N(0, I), one generator per image (`eval.common.image_noise`), so image i
                                    gets the same x_T for every method evaluated with the same --seed
    x_T "inferred"                  DDIM inversion of x0 under the same eps / shift (paper Eq. 8),
                                    with `encode_steps` steps (default: the decode steps, Diff-AE's protocol)
    reconstruction                  DDIM "ddim<steps>" from x_T under z (shift on for every step), or
                                    ancestral DDPM over all T steps from a random x_T (sampler "ddpm", Fig. 6)

Method labels: "pdae", "diffae", and "ddim" for the plain DPM. For the DPM, "inferred" is plain DDIM inversion
then sampling (the paper's DDIM row, latent dim C*H*W); "random" samples from x_T with no z at all (latent dim 0,
a floor: the output is unrelated to x0 except through the dataset). Method "unrelated" is the unrelated-pair
floor (no model): held-out image i scored against held-out image (i + N//2) mod N.

Metrics per image (SSIM and MSE on [0, 1]; the backend's distance on [-1, 1], named by the backend: "lpips"
for real LPIPS-AlexNet, "feat_dist" for the domain feature distance). Every record carries `value` (the mean
over images), `values` (the per-image scores, image order = the held-out order) and `units` "images".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eval import common, metrics
from eval.ddim_codec import decode, infer_x_T, model_device  # noqa: F401 - infer_x_T: public here too
from eval.sample import PAPER_STEPS, write_arrays

# Seed offset of the per-image DDPM noise generators (distinct from the x_T stream of the same seed).
DDPM_SEED_OFFSET = 700_000
# Metrics of Table 1, in the paper's column order (SSIM, distance, MSE); the distance is "lpips" (standard
# backend) or "feat_dist" (domain backend), see eval.backends.
RECON_METRICS = ("ssim", "lpips", "feat_dist", "mse")
# Method label of the unrelated-pair floor rows.
UNRELATED_LABEL = "unrelated"

NOTES = (
    "Table 1 protocol (paper 4.3): first num_images held-out images; z = E(x0) once; random x_T per image "
    "from eval.common.image_noise(seed), shared by all step counts and by every method with the same seed (paired "
    "per image); inferred x_T = DDIM inversion with the shift "
    "(PDAE) / conditional eps (Diff-AE) / plain eps (ddim) using encode_steps steps (default: the decode steps, as "
    "Diff-AE's inv<T>; the official PDAE HEAD script encodes with ddim1000 instead); decoding uses the shift on every "
    "step. 'ddim' random-x_T rows sample the DPM with no code (latent_dim 0). sampler ddpm: ancestral sampling over "
    "all T steps from random x_T (Fig. 6). Reconstructions are clamped to [-1,1] before the metrics ('current' "
    "convention and DDPM outputs are not clamped by the sampler); SSIM/MSE on (x+1)/2 (SSIM: official single-scale "
    "Gaussian-11 window, zero-padded 'same' map averaged over all pixels, which raises SSIM near borders); the "
    "distance from the backend on [-1,1] ('lpips' = LPIPS-AlexNet, standard backend; 'feat_dist' = domain feature "
    "distance, not LPIPS). 'values' = per-image scores (units 'images', held-out order)."
)
UNRELATED_NOTE = (
    "method 'unrelated': the unrelated-pair floor, held-out image i vs held-out image (i + pair_shift) mod N with "
    "pair_shift = N // 2 (every image paired with a different one); no model, identical across methods. An "
    "autoencoder whose random-x_T reconstructions are no closer to their inputs than this has not learned to use z."
)


@dataclass(frozen=True)
class ReconSetting:
    """One way of reconstructing: x_T mode, decode steps, sampler and (for inferred x_T) the encode steps."""

    x_T: str  # "random" | "inferred"
    steps: int  # DDIM steps; T with sampler "ddpm"
    sampler: str = "ddim"  # "ddim" | "ddpm"
    encode_steps: int | None = None  # inferred x_T only

    @property
    def label(self) -> str:
        if self.sampler == "ddpm":
            return f"DDPM T={self.steps} random x_T"
        enc = f" enc={self.encode_steps}" if self.x_T == "inferred" else ""
        return f"DDIM T={self.steps} {self.x_T} x_T{enc}"


def parse_encode_steps(values: Sequence[str | int] | int | None) -> list[int | None]:
    """`--encode-steps` values -> encode-step rules: None ("same": the decode steps) or a positive int."""
    if values is None:
        return [None]
    if isinstance(values, (int, str)):
        values = [values]
    out: list[int | None] = []
    for v in values:
        if str(v) == "same":
            rule = None
        else:
            try:
                rule = int(v)
            except ValueError:
                raise ValueError(f"--encode-steps: expected 'same' or a positive integer, got {v!r}") from None
            if rule < 1:
                raise ValueError(f"--encode-steps: expected 'same' or a positive integer, got {v!r}")
        if rule not in out:
            out.append(rule)
    return out


def recon_settings(
    steps: list[int], x_T_modes: list[str], encode_steps: Sequence[str | int] | int | None, ddpm: bool, T: int
) -> list[ReconSetting]:
    """The settings of one run: every (x_T mode, steps) pair, plus DDPM from random x_T if `ddpm`.

    Inferred x_T gets one setting per encode-step rule (`parse_encode_steps`: "same" = the decode steps,
    Diff-AE's inv<T>; an integer such as 1000 = the official PDAE script's ddim1000 encoding); duplicates
    (e.g. "same" and 100 at T = 100) are measured once.
    """
    for mode in x_T_modes:
        if mode not in ("random", "inferred"):
            raise ValueError(f"--x-T: expected random or inferred, got {mode!r}")
    rules = parse_encode_steps(encode_steps)
    out: list[ReconSetting] = []
    for mode in x_T_modes:
        for s in steps:
            if mode != "inferred":
                out.append(ReconSetting(mode, int(s), "ddim", None))
                continue
            for rule in rules:
                setting = ReconSetting(mode, int(s), "ddim", int(s) if rule is None else rule)
                if setting not in out:
                    out.append(setting)
    if ddpm:
        out.append(ReconSetting("random", T, "ddpm", None))
    return out


def latent_dim_of(method: Any, x_T_mode: str, image_shape: tuple[int, ...]) -> int:
    """Table 1 "latent dim": |z| (random x_T), |z| + C*H*W (inferred), C*H*W for inferred plain DDIM, 0 for random."""
    pixels = math.prod(image_shape)
    z_dim = int(method.latent_dim or 0)  # None: no z (the plain DPM)
    return z_dim + (pixels if x_T_mode == "inferred" else 0)


def encode_all(method: Any, x0: Tensor, batch_size: int = 64) -> Tensor | None:
    """z = E(x0) [N, D] (CPU) for PDAE / Diff-AE, None for the plain DPM (no encoder)."""
    if not method.has_encoder:
        return None
    device = model_device(method)
    with torch.inference_mode():
        return common.batched(lambda x: method.encode(x.to(device)).float().cpu(), x0, batch_size=batch_size)


def ddpm_generators(n: int, seed: int, start: int = 0) -> list[torch.Generator]:
    """One CPU generator per image (images start .. start + n - 1) for DDPM decoding (stream DDPM_SEED_OFFSET)."""
    return [torch.Generator().manual_seed((seed + DDPM_SEED_OFFSET) * 1_000_003 + i) for i in range(start, start + n)]


# Per-image Table 1 metrics (paper §4.3; official PDAE metric/utils.py).
def recon_metrics(x0: Tensor, rec: Tensor, backend: Any | None) -> dict[str, Tensor]:
    """{"ssim", backend.distance_name (if a backend is given), "mse"} -> float64 [N] each, in image order.

    x0, rec: [N, C, H, W] in [-1, 1]; rec is clamped to [-1, 1] first (samplers may overshoot slightly).
    SSIM and MSE are computed on (x + 1) / 2; the distance on [-1, 1] by `backend.distance`, keyed by
    `backend.distance_name` ("lpips" for LPIPS-AlexNet, "feat_dist" for the domain feature distance).
    """
    rec = rec.clamp(-1.0, 1.0)
    out = {"ssim": metrics.ssim(metrics.to_unit(x0), metrics.to_unit(rec))}
    if backend is not None:
        out[backend.distance_name] = backend.distance(x0, rec).cpu()
    out["mse"] = metrics.mse(metrics.to_unit(x0), metrics.to_unit(rec))
    return out


def ordered_metrics(per_image: dict[str, Tensor]) -> list[str]:
    """The metric names of `per_image` in Table 1's column order (RECON_METRICS), unknown names last."""
    return [m for m in RECON_METRICS if m in per_image] + [m for m in per_image if m not in RECON_METRICS]


def metric_rows(prov: dict[str, Any], per_image: dict[str, Tensor], backend: str, **cols: Any) -> list[dict[str, Any]]:
    """One record per metric of `per_image`: value = mean over images, plus `values` / `units` "images"."""
    rows = []
    for metric in ordered_metrics(per_image):
        fields = metrics.per_image_fields(per_image[metric])
        rows.append(common.record(prov, metric, fields.pop("value"), backend, **cols, **fields))
    return rows


def unrelated_shift(n: int) -> int:
    """The fixed shift k = n // 2 of the unrelated-pair floor: i -> (i + k) mod n has no fixed point for n >= 2."""
    if n < 2:
        raise ValueError(f"the unrelated-pair floor needs at least 2 images, got {n}")
    return n // 2


def unrelated_partners(x0: Tensor, shift: int) -> Tensor:
    """x0[(i + shift) mod N] for every image i  # [N, C, H, W]."""
    n = x0.shape[0]
    return x0[(torch.arange(n) + shift) % n]


def unrelated_metrics(x0: Tensor, backend: Any | None) -> tuple[int, dict[str, Tensor]]:
    """(shift k, per-image metrics of image i vs image (i + k) mod N): the score of an autoencoder that ignores
    its input except for being a plausible held-out image. x0: [N, C, H, W] in [-1, 1], N >= 2."""
    shift = unrelated_shift(x0.shape[0])
    return shift, recon_metrics(x0, unrelated_partners(x0, shift), backend)


def unrelated_records(method: Any, per_image: dict[str, Tensor], shift: int, backend: str,
                      eval_seed: int | None = None) -> list[dict[str, Any]]:
    """`recon` rows of the unrelated-pair floor: method "unrelated", provenance of `method` otherwise,
    steps / sampler / x_T / encode_steps / latent_dim "-", pair_shift = k."""
    prov = common.provenance(method, UNRELATED_LABEL, eval_seed=eval_seed)
    cols = dict(table="recon", steps="-", sampler="-", x_T="-", encode_steps="-", latent_dim="-", pair_shift=shift)
    return metric_rows(prov, per_image, backend, **cols)


def reconstruct_all(
    method: Any,
    x0: Tensor,
    settings: list[ReconSetting],
    *,
    seed: int,
    convention: str = "paper",
    batch_size: int = 64,
    start: int = 0,
) -> dict[ReconSetting, Tensor]:
    """Reconstructions [N, C, H, W] (CPU) of x0 for every setting; z and each inferred x_T are computed once.

    Image i (x0[i - start], the evaluation's i-th image) gets x_T = image_noise(i, seed) (random) and, for
    DDPM, its own noise generator: both depend on (seed, i) only, not on the method, the batch size or the
    chunk, so every method evaluated with the same seed sees the same x_T for image i (per-image pairing of
    the `values` across methods).
    """
    n = x0.shape[0]
    z = encode_all(method, x0, batch_size)
    x_T_random = common.image_noise(x0.shape[1:], range(start, start + n), seed)
    inferred: dict[int, Tensor] = {}
    out = {}
    for s in settings:
        if s.sampler == "ddpm":
            rec = decode(method, z, x_T_random, s.steps, sampler="ddpm", generator=ddpm_generators(n, seed, start),
                         batch_size=batch_size)
        else:
            if s.x_T == "inferred":
                if s.encode_steps not in inferred:
                    inferred[s.encode_steps] = infer_x_T(method, x0, z, s.encode_steps, convention=convention,
                                                         batch_size=batch_size)
                x_T = inferred[s.encode_steps]
            else:
                x_T = x_T_random
            rec = decode(method, z, x_T, s.steps, convention=convention, batch_size=batch_size)
        out[s] = rec
    return out


def recon_records(
    method: Any, settings_metrics: dict[ReconSetting, dict[str, Tensor]], image_shape: tuple[int, ...], backend: str,
    eval_seed: int | None = None,
) -> list[dict[str, Any]]:
    """`recon` rows (record vocabulary of eval_context): one per (setting, metric); value = mean over images,
    `values` = the per-image scores (image order of x0), `units` = "images"."""
    prov = common.provenance(method, method.record_label, eval_seed=eval_seed)
    rows = []
    for s, per_image in settings_metrics.items():
        cols = dict(table="recon", steps=s.steps, sampler=s.sampler, x_T=s.x_T,
                    encode_steps=s.encode_steps if s.encode_steps is not None else "-",
                    latent_dim=latent_dim_of(method, s.x_T, image_shape))
        rows.extend(metric_rows(prov, per_image, backend, **cols))
    return rows


# ------------------------------------------------------------------------------------------------
# CLI: `python -m eval reconstruct`.


def run(args: argparse.Namespace) -> int:
    from pdae.checkpoint import load_method

    device = common.resolve_device(args.device)
    method = load_method(args.model, device)
    if not common.can_reconstruct(method):
        raise ValueError(f"{args.model}: reconstruct needs a pdae, diffae or dpm model, got {method.name!r}")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    if args.chunk_images < 2:
        raise ValueError(f"--chunk-images must be >= 2, got {args.chunk_images}")
    spec = common.data_spec(method, args.data)
    from pdae.data import build_dataset

    ds = build_dataset(spec, split=args.split)
    n = min(args.num_images, len(ds))
    backend = common.backend_from_args(args, device)
    # DDPM decoding is Fig. 6's autoencoder experiment; for the plain DPM it would be unconditional sampling.
    settings = recon_settings(args.steps, args.x_T, args.encode_steps, args.ddpm and method.has_encoder,
                              method.schedule.T)
    # Chunks of --chunk-images: the paper's 30k CelebA-HQ images x 13 settings would not fit in memory at once;
    # the noise of image i depends on i only, so chunks change no number beyond batched-network rounding.
    parts: dict[ReconSetting, list[dict[str, Tensor]]] = {s: [] for s in settings}
    for start in range(0, n, args.chunk_images):
        x0 = torch.stack([ds[i][0] for i in range(start, min(n, start + args.chunk_images))])
        if start == 0:
            first_x0 = x0
            size = common.model_image_size(method)
            if size is not None and tuple(x0.shape[2:]) != (size, size):
                raise ValueError(f"--data: images of {common.describe_data(spec)} are {tuple(x0.shape[2:])} px, "
                                 f"the model takes {size} x {size} (set image_size in the data spec)")
        recs = reconstruct_all(method, x0, settings, seed=args.seed, convention=args.convention,
                               batch_size=args.batch_size, start=start)
        for s, rec in recs.items():
            parts[s].append(recon_metrics(x0, rec, backend))
        if start == 0:
            first_recs = {s: rec[: args.grid_images] for s, rec in recs.items()}
        del recs
    per_setting = {s: {m: torch.cat([p[m] for p in parts[s]]) for m in parts[s][0]} for s in settings}
    x0 = first_x0
    rows = recon_records(method, per_setting, tuple(x0.shape[1:]), backend.name, eval_seed=args.seed)
    meta = dict(notes=NOTES, convention=args.convention, num_images=n, split=args.split,
                eval_data=common.describe_data(spec),
                encode_steps_rule=" ".join("same as decode steps" if r is None else str(r)
                                           for r in parse_encode_steps(args.encode_steps)),
                noise_seed=args.seed, distance_metric=backend.distance_name,
                image_indices=[int(i) for i in ds.source_indices[:n]])
    if args.unrelated_floor:  # over the first chunk (all images when they fit in one)
        rows += floor_rows(method, x0, backend, args.seed, meta)
        meta["unrelated_floor_images"] = int(x0.shape[0])
    # The protocol of every row (eval.tables names it): the data, split and number of images evaluated (the
    # unrelated floor's rows: the images it used) and the DDIM step rule of the row's setting.
    # A dataset folder (--data DIR) is named by its path: the model's variant need not describe it.
    evaluated = str(args.data) if args.data and Path(args.data).is_dir() else common.data_slug(spec)
    rows = [{**r, "eval_data": evaluated, "split": args.split,
             "n_images": len(r["values"]) if isinstance(r.get("values"), list) else n, "step_rule": step_rule(r)}
            for r in rows]
    common.write_records(args.out, rows, **meta)
    if args.arrays:
        k = min(args.grid_images, x0.shape[0])
        grid = torch.stack([x0[:k]] + [first_recs[s][:k].clamp(-1.0, 1.0) for s in settings])
        arrays: dict[str, Any] = {
            "grid": grid,  # [1 + settings, k, C, H, W]
            "row_labels": ["original"] + [s.label for s in settings],
            "col_labels": [f"image {int(j)}" for j in ds.source_indices[:k]],
            "setting_labels": [s.label for s in settings],
            "source_indices": torch.as_tensor(ds.source_indices[:n]),
        }
        for metric in ordered_metrics(per_setting[settings[0]]):
            arrays[f"per_image_{metric}"] = torch.stack([per_setting[s][metric] for s in settings])  # [S, N]
        write_arrays(args.arrays, arrays, **common.provenance(method, method.record_label), table="recon",
                     backend=backend.name, **meta)
    return 0


def step_rule(row: dict[str, Any]) -> str:
    """The encode/decode step rule of a recon row, for the tables' protocol: inferred x_T, "encode T -> decode T"
    (DDIM inversion with the decode steps, Diff-AE's inv<T>) or "encode N -> decode T" (a fixed count; the official
    PDAE script encodes with ddim1000); "-" where nothing is encoded (random x_T, DDPM, the unrelated floor)."""
    if row.get("x_T") != "inferred" or row.get("sampler") != "ddim":
        return "-"
    same = str(row.get("encode_steps")) == str(row.get("steps"))
    return f"encode {'T' if same else row.get('encode_steps')} -> decode T"


def floor_rows(method: Any, x0: Tensor, backend: Any, seed: int, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Unrelated-pair floor rows for the CLI (none, with a note in `meta`, when fewer than 2 images)."""
    if x0.shape[0] < 2:
        meta["unrelated_floor"] = "skipped: needs at least 2 images"
        return []
    shift, per_image = unrelated_metrics(x0, backend)
    meta.update(unrelated_floor=UNRELATED_NOTE, pair_shift=shift)
    return unrelated_records(method, per_image, shift, backend.name, eval_seed=seed)


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("reconstruct", help="Table 1: autoencoding reconstruction (SSIM, LPIPS or feature "
                                                  "distance, MSE)")
    p.add_argument("--model", required=True, help="pdae, diffae or dpm model folder (dpm rows are labelled 'ddim')")
    p.add_argument("--steps", type=int, nargs="+", default=list(PAPER_STEPS), help="DDIM decode steps")
    p.add_argument("--x-T", dest="x_T", nargs="+", default=["random", "inferred"], choices=("random", "inferred"))
    p.add_argument("--encode-steps", nargs="+", default=["same"], metavar="same|N",
                   help="DDIM inversion steps for inferred x_T, one row set per value: 'same' = the decode steps "
                        "(Diff-AE's inv<T>), N = a fixed count (the official PDAE script encodes with 1000)")
    p.add_argument("--ddpm", action="store_true", help="also stochastic DDPM decoding from random x_T (Fig. 6)")
    p.add_argument("--convention", choices=("paper", "current"), default="paper",
                   help="DDIM respacing: paper (guided-diffusion space_timesteps, as at paper time) or current "
                        "(official PDAE code since 2023-02: linspace(0, T-1, steps+1))")
    p.add_argument("--num-images", type=int, default=64, help="first N images of --split")
    p.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="images evaluated: the held-out split (default), the training split, or all images (the "
                        "paper evaluates its FFHQ models on all 30k CelebA-HQ images: --data SPEC --split all)")
    p.add_argument("--out", required=True, help="records JSON")
    p.add_argument("--arrays", default=None, help="NPZ: reconstruction grid and per-image metrics")
    p.add_argument("--grid-images", type=int, default=8, help="columns of the reconstruction grid")
    p.add_argument("--seed", type=int, default=0, help="noise seed (per-image generators)")
    p.add_argument("--unrelated-floor", action=argparse.BooleanOptionalAction, default=True,
                   help="also rows of method 'unrelated': image i vs image (i + N//2) mod N (default: on)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-images", type=int, default=1024,
                   help="images reconstructed at a time (memory: settings x chunk images); the numbers do not "
                        "depend on it beyond float rounding of batched networks")
    p.add_argument("--data", default=None, help="dataset spec YAML (default: the model's training data)")
    common.add_backend_args(p)
    p.set_defaults(func=run)
