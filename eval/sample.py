"""Unconditional sampling through the latent DPM (PDAE Table 2) and the reusable decode / latent-sampling steps.

docs/protocol.md §5.7 (protocol) and §1.8 (latent DPM): z_T ~ N(0, I) (clamped to [-1, 1] iff the latent DPM was
trained with `clip_latent`, as PDAE's code; Diff-AE does not clamp), latent DDIM with the same "ddimN" as the
image decoder (predicted normalised z_0 clamped iff `clip_latent`), denormalise, then DDIM decoding from
x_T ~ N(0, I) with PDAE's shift switched off for the last 30% of the steps (`stop_fraction`; paper §4.8).
The plain DPM rows ("ddim") are DDIM sampling from x_T alone.

Public functions (imported by the few-shot and truncation evaluations; keep their signatures stable):

    sample_latents(latent, n, steps, generator=None, *, z_T=None, convention, batch_size) -> raw z [n, D]
    decode(method, z, x_T, steps, stop_fraction=0.0, *, ...)  (eval.ddim_codec)        -> images [N, C, H, W]
    latent_noise / image_shape / model_device / write_arrays                            helpers
    real_sample_indices(num_images, n, seed)                     -> n distinct indices (the real-data FID floor)
    latent_health(latent, z)                                     -> latent_std, latent_mean_abs of normalised z

Noise is drawn per sample (`eval.common.image_noise`), so sample i is the same whatever the batch size.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eval import common
from eval.ddim_codec import check_steps as _check_steps
from eval.ddim_codec import decode, model_device  # noqa: F401 - public here too (edit, gap, reconstruct, tests)
from eval.stats import FID_BOOTSTRAP
from pdae import precision as precision_mod
from pdae.progress import batch_starts
from pdae.diffusion.sampling import ddim_sample

# Seed offset of the latent noise stream z_T, so that z_T and x_T of one seed never share a generator.
LATENT_SEED_OFFSET = 500_000
# Default fraction of the last sampling steps run without PDAE's shift (paper §4.8; official PDAE code,
# `latent_diffusion_sample`).
DEFAULT_STOP_FRACTION = 0.3
# Paper's DDIM step counts (Table 1 and Table 2).
PAPER_STEPS = (10, 20, 50, 100)
# Methods `uncond` writes rows for (paper Table 2; record vocabulary `uncond`).
UNCOND_METHODS = ("ddim", "diffae", "pdae")
# Seed streams of the real-image subset behind the FID floor and of the FID bootstrap resampling.
REAL_SUBSET_STREAM = 600_000
BOOTSTRAP_STREAM = 700_000

NOTES_UNCOND = (
    "PDAE paper Table 2 protocol: z_T ~ N(0,I), clamped to [-1,1] iff the latent DPM has clip_latent "
    "(PDAE code) together with its predicted normalised z_0; latent DDIM and image DDIM use the same ddimN; "
    "PDAE's shift is off for the last stop_fraction of the image DDIM steps; 'ddim' rows sample the plain DPM. "
    "Reference statistics: the first num_images training images (Diff-AE's choice; the paper says randomly "
    "selected). FID/KID come from the named metric backend. fid rows: value = FID of all n_samples samples, "
    "values = bootstrap replicates (units 'bootstrap': samples resampled with replacement, reference fixed; "
    "the same resampled indices for every method at one eval_seed, steps and n; replicates sit above value by "
    "about tr(cov)/n). kid rows: mean unbiased MMD^2 over subsets of kid_subset < n samples. 'real' fid/kid rows "
    "(written with the ddim rows): n_samples training images drawn without replacement (seed = eval_seed) "
    "against the reference statistics, the FID floor at this n; these images overlap the reference images "
    "(the embedded datasets have fewer than 2n training images), which makes the floor optimistic. "
    "latent_std / latent_mean_abs: mean over latent dimensions of the std / |mean| of the sampled normalised "
    "z (real normalised z: 1 / 0 by construction)."
)


# ------------------------------------------------------------------------------------------------
# Helpers shared by the sampling evaluations.


def image_shape(method: Any, override: str | None = None) -> tuple[int, int, int]:
    """(C, H, W) of the images a model was trained on, from its data spec (see `eval.common.data_spec`)."""
    from pdae.data import resolve_spec

    spec = resolve_spec(common.data_spec(method, override))
    return int(spec["channels"]), int(spec["image_size"]), int(spec["image_size"])


def latent_noise(n: int, dim: int, seed: int, start: int = 0) -> Tensor:
    """z_T ~ N(0, I) for samples start .. start+n-1, one generator per sample (stream LATENT_SEED_OFFSET).

    Returns:
        [n, dim] float32 (CPU)
    """
    return common.image_noise((dim,), range(start, start + n), seed + LATENT_SEED_OFFSET)


# ------------------------------------------------------------------------------------------------
# The two sampling stages.


# Latent DDIM (docs/protocol.md §1.8): z_T -> normalised z_0 -> denormalised z.
def sample_latents(
    latent: Any,
    n: int,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    z_T: Tensor | None = None,
    convention: str = "paper",
    batch_size: int = 1024,
    precision: str = "fp32",
) -> Tensor:
    """Raw (denormalised) semantic latents from a latent DPM (`pdae.methods.LatentDPM`).

    z_T ~ N(0, I) ([n, D]; from `generator`, a CPU generator, unless `z_T` is given) is clamped to [-1, 1] iff
    `latent.method_kwargs["clip_latent"]`; deterministic DDIM with "ddim<steps>" (`convention`, docs/protocol.md §1.6)
    clamps the predicted normalised z_0 iff clip_latent (PDAE's quirk, docs/protocol.md §7.4); the result is
    denormalised with the latent DPM's dataset statistics.

    Returns:
        z  # [n, D] float32 on the latent DPM's device
    """
    if not (getattr(latent, "is_diffusion", False) and getattr(latent, "input_kind", None) == "latents"):
        got = getattr(latent, "name", type(latent).__name__)
        raise ValueError(f"sample_latents needs a latent DPM, got method {got!r}")
    _check_steps(steps)
    dim = int(latent.latent_dim)
    if z_T is None:
        if generator is None:
            raise ValueError("sample_latents: pass a generator or z_T")
        if n < 1:
            raise ValueError(f"sample_latents: n must be >= 1, got {n}")
        z_T = torch.randn((n, dim), generator=generator, device=generator.device)
    if z_T.ndim != 2 or z_T.shape != (n, dim):
        raise ValueError(f"z_T must be [n, {dim}] = [{n}, {dim}], got {tuple(z_T.shape)}")
    clip = bool(latent.method_kwargs.get("clip_latent", False))
    device = model_device(latent)
    z_T = z_T.to(device=device, dtype=torch.float32)
    if clip:
        z_T = z_T.clamp(-1.0, 1.0)
    eps_fn, _ = latent.denoiser()
    eps_fn = precision_mod.wrap(eps_fn, device, precision)
    out = []
    with torch.inference_mode():
        for i in batch_starts(z_T.shape[0], batch_size, f"latent DDIM, {steps} steps", "latents"):
            z0 = ddim_sample(eps_fn, z_T[i : i + batch_size], latent.schedule, steps, convention=convention,
                             clip_x0=clip)
            out.append(latent.denormalize(z0))
    return torch.cat(out)


# One unconditional sample set (paper §4.8): latent DPM -> z -> shifted DDIM; or the plain DPM.
def sample_unconditional(
    decoder: Any,
    latent: Any | None,
    n: int,
    steps: int,
    *,
    seed: int,
    stop_fraction: float = DEFAULT_STOP_FRACTION,
    convention: str = "paper",
    batch_size: int = 64,
    shape: tuple[int, int, int] | None = None,
    return_latents: bool = False,
    precision: str = "fp32",
) -> Tensor | tuple[Tensor, Tensor | None]:
    """n samples [n, C, H, W] (CPU). Sample i uses x_T = image_noise(i, seed) and z_T = latent_noise(i, seed).

    `decoder` is a plain DPM (then `latent` must be None and `stop_fraction` is irrelevant) or a PDAE / Diff-AE
    autoencoder with its latent DPM. `shape` defaults to the decoder's training images (`image_shape`).
    With `return_latents`, returns (samples, raw z [n, D] from the latent DPM, or None for a plain DPM).
    """
    shape = shape or image_shape(decoder)
    x_T = common.image_noise(shape, range(n), seed)
    z = None
    if decoder.conditioning == "none":
        if latent is not None:
            raise ValueError("a plain DPM samples without a latent DPM")
        samples = decode(decoder, None, x_T, steps, convention=convention, batch_size=batch_size,
                         precision=precision)
    else:
        if latent is None:
            raise ValueError(f"method {decoder.name} needs its latent DPM (--latent DIR)")
        z_T = latent_noise(n, int(latent.latent_dim), seed)
        z = sample_latents(latent, n, steps, z_T=z_T, convention=convention, batch_size=max(batch_size, 256),
                           precision=precision)
        samples = decode(decoder, z, x_T, steps, stop_fraction, convention=convention, batch_size=batch_size,
                         precision=precision)
    return (samples, z) if return_latents else samples


def latent_health(latent: Any, z: Tensor) -> dict[str, float]:
    """How far sampled latents are from the latent DPM's training distribution, in its normalised space.

    z [n, D] (raw, as `sample_latents` returns) is normalised with the latent DPM's dataset statistics,
    z_n = (z - mean) / std, under which the real training latents have per-dimension mean 0 and (unbiased)
    std 1 by construction. Returns {"latent_std": mean over dimensions of std(z_n), "latent_mean_abs": mean
    over dimensions of |mean(z_n)|}: near 1 and 0 for a healthy latent DPM; an untrained one gives std >> 1
    (or << 1 when clip_latent squeezes it).
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"latent_health needs z [n, D] with n >= 2, got {tuple(z.shape)}")
    mean, std = (s.double() for s in latent.latent_statistics())
    z_n = (z.detach().double().cpu() - mean) / std
    return {"latent_std": float(z_n.std(dim=0).mean()), "latent_mean_abs": float(z_n.mean(dim=0).abs().mean())}


def real_sample_indices(num_images: int, n: int, seed: int) -> np.ndarray:
    """min(n, num_images) distinct indices of a split's images, drawn without replacement (stream
    REAL_SUBSET_STREAM of `seed`) and sorted: the real images behind an FID floor at the same n as the samples."""
    if num_images < 1 or n < 1:
        raise ValueError(f"real_sample_indices: need num_images, n >= 1, got {num_images}, {n}")
    rng = np.random.default_rng([REAL_SUBSET_STREAM, int(seed)])
    return np.sort(rng.choice(int(num_images), size=min(int(n), int(num_images)), replace=False))


def bootstrap_seed(seed: int, *stream: int) -> list[int]:
    """Seed of the FID bootstrap resampling of an evaluation: the eval seed plus the evaluation's own stream
    (e.g. the step count), so methods evaluated with the same seed, stream and n resample the same indices."""
    return [BOOTSTRAP_STREAM, int(seed), *(int(s) for s in stream)]


# ------------------------------------------------------------------------------------------------
# Array files for figures.


def write_arrays(path: str | os.PathLike, arrays: dict[str, Any], **meta: Any) -> Path:
    """Write named arrays to `path` (.npz, atomically) and provenance `meta` to the JSON sidecar `<path>.json`.

    Lists of strings (e.g. `row_labels`) are stored as numpy string arrays; tensors as numpy arrays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            value = np.array(value, dtype=str)
        out[key] = np.asarray(value)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **out)
    os.replace(tmp, path)
    common.write_json_atomic(sidecar_path(path), {"arrays": sorted(out), **meta})
    return path


def sidecar_path(path: str | os.PathLike) -> Path:
    """The provenance JSON next to an array file: `x.npz` -> `x.npz.json`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


# ------------------------------------------------------------------------------------------------
# CLI: `python -m eval ref-stats` and `python -m eval uncond`.


def reference_protocol(reference: Any) -> dict[str, Any]:
    """What a FID's reference set was, from its statistics file's meta: images, split and selection."""
    meta = getattr(reference, "meta", None) or {}
    return {"eval_data": common.data_slug(meta["data"]) if isinstance(meta.get("data"), dict) else "-",
            "ref_images": meta.get("num_images", "-"), "ref_split": meta.get("split", "-"),
            "ref_selection": meta.get("selection", "first") + (f" (seed {meta['selection_seed']})"
                                                                 if "selection_seed" in meta else "")}


def set_clip_latent(latent: Any, mode: str) -> bool:
    """Apply `--clip-latent`: `model` keeps the latent DPM's own `clip_latent`, `on` clamps z_T and the predicted
    normalised z_0 to [-1, 1] as the official PDAE sampler does, `off` does not. -> the effective setting."""
    if mode not in ("model", "on", "off"):
        raise ValueError(f"--clip-latent: expected model, on or off, got {mode!r}")
    if mode != "model":
        latent.method_kwargs = {**latent.method_kwargs, "clip_latent": mode == "on"}
    return bool(latent.method_kwargs.get("clip_latent", False))


def add_clip_latent_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip-latent", choices=("model", "on", "off"), default="model",
                   help="clamp z_T and the predicted normalised z_0 to [-1, 1]: model = as the latent DPM was "
                        "trained/imported (default), on = the official PDAE sampler's clamp, off = never")


def reference_indices(num_images: int, count: int, selection: str = "first", seed: int = 0) -> list[int]:
    """Indices of the FID reference images in a split of `num_images`: the first `count` (Diff-AE's choice),
    or `count` drawn uniformly without replacement by a numpy Generator seeded with `seed`, sorted (the PDAE
    paper, Table 2: 50k training images "randomly selected"). Capped at the split's size."""
    n = min(int(count), int(num_images))
    if selection == "first":
        return list(range(n))
    if selection == "random":
        return sorted(int(i) for i in np.random.default_rng(int(seed)).choice(int(num_images), size=n, replace=False))
    raise ValueError(f"--selection: expected first or random, got {selection!r}")


def _images_subset(spec: dict[str, Any], count: int, split: str, selection: str = "first", seed: int = 0) -> Any:
    from torch.utils.data import Subset

    from pdae.data import build_dataset

    ds = build_dataset(spec, split=split)
    return Subset(ds, reference_indices(len(ds), count, selection, seed)), ds


def run_ref_stats(args: argparse.Namespace) -> int:
    """Reference feature statistics of --num-images training images, the first ones or a seeded random draw
    (--selection; docs/protocol.md §5.7)."""
    from eval.fid import compute_reference_stats
    from pdae.checkpoint import load_method

    device = common.resolve_device(args.device)
    if args.model is None and args.data is None:
        raise ValueError("ref-stats: pass --model DIR (its training data) or --data SPEC.yaml")
    if args.selection_seed < 0:  # numpy's Generator takes non-negative seeds only
        raise ValueError(f"--selection-seed: expected a non-negative integer, got {args.selection_seed}")
    spec = common.data_spec(load_method(args.model, "cpu") if args.model else None, args.data)
    if args.num_images < 2:
        raise ValueError(f"--num-images: need at least 2 reference images, got {args.num_images}")
    images, ds = _images_subset(spec, args.num_images, args.split, args.selection, args.selection_seed)
    backend = common.backend_from_args(args, device)
    selection = {"selection": args.selection} | ({"selection_seed": args.selection_seed}
                                                 if args.selection == "random" else {})
    compute_reference_stats(
        images, backend, args.out, batch_size=args.batch_size, cuda=device.type == "cuda",
        meta={"dataset": spec.get("name"), "split": args.split, "data": spec, **selection,
              "source_indices": [int(ds.source_indices[j]) for j in images.indices]},
    )
    return 0


@torch.no_grad()
def confident_fraction(classifier: torch.nn.Module, images: Tensor, threshold: float = 0.9, batch_size: int = 256) -> float:
    """Fraction of images that `classifier` (logits for [-1, 1] images) assigns to one class with
    softmax probability >= threshold: a per-sample quality measure for datasets with labels."""
    device = next(classifier.parameters()).device
    hits = 0
    for i in range(0, len(images), batch_size):
        probs = classifier(images[i : i + batch_size].to(device)).float().softmax(dim=1)
        hits += int((probs.max(dim=1).values >= threshold).sum())
    return hits / len(images)


def real_floor_rows(args: argparse.Namespace, spec: dict[str, Any], reference: Any, backend: Any,
                    prov: dict[str, Any], cuda: bool) -> list[dict[str, Any]]:
    """'real' fid (+kid) rows: --num-samples training images (capped at the split size), drawn without
    replacement with --seed, against the reference statistics: what FID a perfect sampler gets at this n."""
    from torch.utils.data import Subset

    from eval.fid import compute_fid, fid_records
    from pdae.data import build_dataset

    ds = build_dataset(spec, split="train")
    images = Subset(ds, real_sample_indices(len(ds), args.num_samples, args.seed).tolist())
    res = compute_fid(images, reference, backend, kid=not args.no_kid, kid_subset_size=args.kid_subset_size,
                      batch_size=args.batch_size, cuda=cuda, bootstrap=args.bootstrap,
                      bootstrap_seed=bootstrap_seed(args.seed, 0))
    return fid_records({**prov, "method": "real"}, res, table="uncond", steps="-")


def run_uncond(args: argparse.Namespace) -> int:
    """Table 2 rows: FID (+KID) of unconditional samples at each DDIM step count (PDAE paper Table 2), with
    bootstrap replicates, the real-data floor at the same n (ddim runs) and the latent DPM's health."""
    from eval.fid import compute_fid, fid_records, reference_stats
    from pdae.checkpoint import load_method

    device = common.resolve_device(args.device)
    if (args.dpm is None) == (args.autoencoder is None):
        raise ValueError("uncond: pass either --dpm DIR or --autoencoder DIR --latent DIR")
    if args.dpm is not None:
        decoder, latent = common.load_model(args.dpm, "dpm", device), None
    else:
        if args.latent is None:
            raise ValueError("uncond: --autoencoder needs --latent DIR (its latent DPM)")
        decoder = common.load_model(args.autoencoder, "autoencoder", device)
        latent = common.load_model(args.latent, "latent", device, companion_of=decoder)
        set_clip_latent(latent, args.clip_latent)
    label = decoder.record_label  # "ddim" for the plain DPM
    plain = latent is None  # the plain DPM's run, which also writes the real-data rows
    backend = common.backend_from_args(args, device)
    cuda = device.type == "cuda"
    reference, _ = reference_stats(args.ref_stats, backend, kid=not args.no_kid)
    shape = image_shape(decoder, args.data)
    prov = common.provenance(decoder, label, eval_seed=args.seed)
    rows, grid, row_labels = [], [], []
    # With the domain backend, also the share of samples its classifier is confident about (and, as the
    # reference, the share of real held-out images), a per-sample quality measure.
    classifier = load_method(args.feature_net, device).feature_network() if args.backend == "domain" else None
    if classifier is not None and plain:
        real, _, _ = common.eval_images(common.data_spec(decoder, args.data), args.num_samples)
        rows.append(common.record({**prov, "method": "real"}, "confident", confident_fraction(classifier, real),
                                  backend.name, table="uncond", steps="-"))
    if plain:
        rows += real_floor_rows(args, common.data_spec(decoder, args.data), reference, backend, prov, cuda)
    for steps in args.steps:
        samples, z = sample_unconditional(decoder, latent, args.num_samples, steps, seed=args.seed,
                                          stop_fraction=args.stop_fraction, convention=args.convention,
                                          batch_size=args.batch_size, shape=shape, return_latents=True,
                                          precision=args.precision)
        samples = samples.clamp(-1.0, 1.0)
        res = compute_fid(samples, reference, backend, kid=not args.no_kid, kid_subset_size=args.kid_subset_size,
                          batch_size=args.batch_size, cuda=cuda, bootstrap=args.bootstrap,
                          bootstrap_seed=bootstrap_seed(args.seed, steps))
        cols = dict(table="uncond", steps=steps)
        rows += fid_records(prov, res, **cols)
        if z is not None:
            for metric, value in latent_health(latent, z).items():
                rows.append(common.record(prov, metric, value, "-", **cols, n_samples=args.num_samples))
        if classifier is not None:
            rows.append(common.record(prov, "confident", confident_fraction(classifier, samples), backend.name, **cols))
        grid.append(samples[: args.grid_samples])
        row_labels.append(f"{label} T={steps}")
    protocol = {**reference_protocol(reference),
                "clip_latent": bool(latent.method_kwargs.get("clip_latent", False)) if latent is not None else "-"}
    # The protocol of every row (eval.tables names it); step_rule: the latent DPM and the image decoder both sample
    # with the row's DDIM steps (docs/protocol.md §5.7); "-" for the plain DPM (image DDIM only).
    rows = [{**r, **protocol, "step_rule": "-" if plain else "latent T -> decode T"} for r in rows]
    meta = dict(notes=NOTES_UNCOND, convention=args.convention, num_samples=args.num_samples,
                precision=precision_mod.resolve(args.precision, device),
                stop_fraction=args.stop_fraction if not plain else "-", ref_stats=str(args.ref_stats),
                latent=str(args.latent) if latent is not None else "-",
                **protocol)
    common.write_records(args.out, rows, **meta)
    if args.arrays:
        grid_t = torch.stack(grid)  # [steps, k, C, H, W]
        write_arrays(args.arrays, {"grid": grid_t, "row_labels": row_labels,
                                   "col_labels": [f"sample {i}" for i in range(grid_t.shape[1])]},
                     **prov, table="uncond", seed_noise=args.seed, **meta)
    return 0


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="noise seed (per-sample generators)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data", default=None, help="dataset spec YAML (default: the model's training data)")
    common.add_backend_args(p)


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("ref-stats", help="reference FID/KID feature statistics of real training images")
    p.add_argument("--model", default=None, help="any model folder trained on the dataset (for its data spec)")
    p.add_argument("--num-images", type=int, default=1000, help="N images of the split (default 1000)")
    p.add_argument("--split", choices=("train", "test", "all"), default="train")
    p.add_argument("--selection", choices=("first", "random"), default="first",
                   help="the first N images (Diff-AE's reference) or N drawn at random without replacement "
                        "(the PDAE paper, Table 2), seeded by --selection-seed")
    p.add_argument("--selection-seed", type=int, default=0, help="seed of --selection random (default 0)")
    p.add_argument("--out", required=True, help="statistics file (.npz)")
    _common_args(p)
    p.set_defaults(func=run_ref_stats)

    p = subparsers.add_parser("uncond", help="Table 2: unconditional sampling FID via the latent DPM")
    p.add_argument("--dpm", default=None, help="plain DPM folder (rows 'ddim')")
    p.add_argument("--autoencoder", default=None, help="PDAE or Diff-AE folder (with --latent)")
    p.add_argument("--latent", default=None, help="latent DPM folder trained on the autoencoder's z")
    p.add_argument("--steps", type=int, nargs="+", default=list(PAPER_STEPS), help="DDIM steps (latent and image)")
    p.add_argument("--num-samples", type=int, default=256, help="samples per step count (paper: 50k)")
    p.add_argument("--stop-fraction", type=float, default=DEFAULT_STOP_FRACTION,
                   help="last fraction of image DDIM steps without PDAE's shift (paper: 0.3)")
    p.add_argument("--convention", choices=("paper", "current"), default="paper")
    p.add_argument("--ref-stats", required=True, help="file from `ref-stats` (same backend)")
    p.add_argument("--no-kid", action="store_true", help="skip KID")
    p.add_argument("--kid-subset-size", type=int, default=None,
                   help="KID subset size, < --num-samples (default: min(1000, num_samples // 2))")
    p.add_argument("--bootstrap", type=int, default=FID_BOOTSTRAP,
                   help=f"bootstrap replicates of each FID, stored as the record's values (default {FID_BOOTSTRAP})")
    p.add_argument("--out", required=True, help="records JSON")
    p.add_argument("--arrays", default=None, help="NPZ of a few samples per step count (grid)")
    p.add_argument("--grid-samples", type=int, default=8)
    add_clip_latent_arg(p)
    _common_args(p)
    common.add_precision_arg(p, "auto")
    p.set_defaults(func=run_uncond)
