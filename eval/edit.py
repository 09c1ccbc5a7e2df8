"""Editing with semantic latents (PDAE, Zhang et al. 2022): interpolation (Fig. 7), attribute manipulation
(Fig. 8) and the truncation-like effect of the class-conditional estimator (Fig. 9), each measured.

Sub-commands:

    interpolate   Paper §4.4, Fig. 7. Encode two held-out images to (z, x_T) (z = E(x0); x_T by DDIM inversion
                  with the shift, paper Eq. 8), decode with DDIM from Slerp(x_T^a, x_T^b; lam) under
                  G(x_t, Lerp(z^a, z^b; lam), t) (mode z_lerp, row 1 of Fig. 7) and under
                  Lerp(G(., z^a), G(., z^b); lam) (mode g_lerp, row 2; PDAE only), lam = 0, 0.1, ..., 1.
                  Diff-AE: its conditional eps under Lerp(z). Measured: endpoint_mse (frames at lam = 0 / 1
                  against the plain reconstructions; 0 by construction), smoothness (the metric backend's
                  distance, LPIPS-AlexNet or feat_dist, between consecutive frames, recorded at the later lam).
    manipulate    Paper §4.5, Fig. 8. z_n' = z_n + s sqrt(D) w_c / ||w_c|| in the latent classifier's
                  normalised space, denormalised, decoded from the inferred x_T. Measured per strength s
                  (s = 0 is the plain reconstruction): attr_prob = the classifier's probability of the
                  attribute on E(edited image) (re-encoded, so the decoder must really render the edit; it
                  should rise with s) and identity = 1 - distance(edited image, original image) (the
                  backend's LPIPS or feat_dist; should stay high).
    truncation    Paper §4.6, Fig. 9. Class-conditional PDAE (`pdae_class`): DDIM samples per class from fixed
                  per-sample x_T, G scaled by s (eps_hat = eps_theta - s sqrt(1 - alpha_bar) G). Measured per s:
                  fid (all samples pooled vs reference statistics of the dataset; with `n_samples` and B
                  bootstrap replicates as `values`, units "bootstrap") and class_accuracy (the domain
                  feature network's argmax vs the conditioning label).

Figures: `--arrays FILE.npz` writes `grid` [rows, cols, C, H, W] in [-1, 1] with `row_labels` / `col_labels`
(+ a JSON sidecar of provenance); `eval.plots` renders them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from eval import common, metrics
from eval.reconstruct import encode_all, infer_x_T
from eval.sample import decode, image_shape, model_device, write_arrays
from eval.stats import FID_BOOTSTRAP
from pdae import precision as precision_mod
from pdae.diffusion.sampling import ddim_sample, lerp, mix_shift_fns, slerp
from pdae.progress import batch_starts

DEFAULT_LAMS = tuple(round(0.1 * k, 1) for k in range(11))      # λ ∈ {0, 0.1, ..., 1} (paper Fig. 7)
DEFAULT_STRENGTHS = (-0.3, -0.1, 0.1, 0.3)                      # s of official PDAE code, sampler/manipulation.py
DEFAULT_SCALES = tuple(0.5 * k for k in range(7))               # {0, 0.5, ..., 3.0} (paper Fig. 9)
INTERPOLATION_MODES = ("z_lerp", "g_lerp")


# ------------------------------------------------------------------------------------------------
# Interpolation (Fig. 7, docs/protocol.md §5.4).


def _decode_g_lerp(
    method: Any, z_a: Tensor, z_b: Tensor, lam: float, x_T: Tensor, steps: int, convention: str, batch_size: int
) -> Tensor:
    """PDAE DDIM decode of x_T [N, C, H, W] with eps_theta and G = Lerp(G(., z_a), G(., z_b); lam) (`mix_shift_fns`)."""
    device = model_device(method)
    out = []
    with torch.no_grad():
        for i in batch_starts(x_T.shape[0], batch_size, f"{method.name} G-lerp DDIM, {steps} steps", "images"):
            sl = slice(i, i + batch_size)
            eps_fn, shift_a = method.denoiser(z_a[sl].to(device))
            _, shift_b = method.denoiser(z_b[sl].to(device))
            x = x_T[sl].to(device=device, dtype=torch.float32)
            out.append(ddim_sample(eps_fn, x, method.schedule, steps, convention=convention,
                                   shift_fn=mix_shift_fns(shift_a, shift_b, lam)).float().cpu())
    return torch.cat(out)


def interpolation_frames(
    method: Any,
    x_a: Tensor,
    x_b: Tensor,
    lams: Sequence[float],
    *,
    steps: int,
    encode_steps: int,
    convention: str = "paper",
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Interpolation frames between image pairs (x_a[i], x_b[i]), both [P, C, H, W] in [-1, 1].

    Returns {"z_lerp": [P, L, C, H, W], "g_lerp": [P, L, C, H, W] (PDAE only), "recon_a", "recon_b": [P, C, H, W]},
    L = len(lams); the recon_* are the plain inferred-x_T reconstructions (DDIM from x_T under z). Frames are not
    clamped (the "paper" DDIM output already is).
    """
    if not method.has_encoder:
        raise ValueError(f"interpolate needs a pdae or diffae model, got {method.name!r}")
    if x_a.shape != x_b.shape:
        raise ValueError(f"interpolate: image batches differ in shape, {tuple(x_a.shape)} vs {tuple(x_b.shape)}")
    p = x_a.shape[0]
    x0 = torch.cat([x_a, x_b])
    z = encode_all(method, x0, batch_size)
    x_T = infer_x_T(method, x0, z, encode_steps, convention=convention, batch_size=batch_size)
    z_a, z_b, xT_a, xT_b = z[:p], z[p:], x_T[:p], x_T[p:]
    # Decoded in the same batches as the frames, so that the endpoints are the same computation.
    out = {"recon_a": decode(method, z_a, xT_a, steps, convention=convention, batch_size=batch_size),
           "recon_b": decode(method, z_b, xT_b, steps, convention=convention, batch_size=batch_size)}
    frames_z, frames_g = [], []
    for lam in lams:
        x_T_lam = slerp(xT_a, xT_b, float(lam))
        frames_z.append(decode(method, lerp(z_a, z_b, float(lam)), x_T_lam, steps, convention=convention,
                               batch_size=batch_size))
        if method.has_shift:
            frames_g.append(_decode_g_lerp(method, z_a, z_b, float(lam), x_T_lam, steps, convention, batch_size))
    out["z_lerp"] = torch.stack(frames_z, dim=1)
    if frames_g:
        out["g_lerp"] = torch.stack(frames_g, dim=1)
    return out


def endpoint_mse(frames: Tensor, recon_a: Tensor, recon_b: Tensor) -> tuple[float, float]:
    """Mean per-image MSE on [0, 1] of the first / last frame ([P, L, C, H, W]) against recon_a / recon_b."""
    unit = lambda x: metrics.to_unit(x.clamp(-1.0, 1.0))  # noqa: E731
    first = metrics.mse(unit(frames[:, 0]), unit(recon_a)).mean()
    last = metrics.mse(unit(frames[:, -1]), unit(recon_b)).mean()
    return float(first), float(last)


def consecutive_distances(frames: Tensor, distance: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """distance(frame k-1, frame k) averaged over pairs, for k = 1 .. L-1. frames [P, L, C, H, W] -> [L-1]."""
    p, n = frames.shape[:2]
    if n < 2:
        raise ValueError("smoothness needs at least two interpolation coefficients")
    prev = frames[:, :-1].reshape(-1, *frames.shape[2:]).clamp(-1.0, 1.0)
    nxt = frames[:, 1:].reshape(-1, *frames.shape[2:]).clamp(-1.0, 1.0)
    return distance(prev, nxt).double().cpu().reshape(p, n - 1).mean(0)


def run_interpolate(args: argparse.Namespace) -> int:

    device = common.resolve_device(args.device)
    method = common.load_model(args.autoencoder, "autoencoder", device)
    lams = [float(v) for v in args.lams]
    if any(not 0.0 <= v <= 1.0 for v in lams) or lams != sorted(lams) or len(lams) < 2:
        raise ValueError(f"--lams must be >= 2 increasing values in [0, 1], got {lams}")
    spec = common.data_spec(method, args.data)
    x0, _, ds = common.eval_images(spec, 2 * args.num_pairs)
    if x0.shape[0] < 2 * args.num_pairs:
        raise ValueError(f"--num-pairs {args.num_pairs} needs {2 * args.num_pairs} held-out images, "
                         f"found {x0.shape[0]}")
    backend = common.backend_from_args(args, device)
    p = args.num_pairs
    x_a, x_b = x0[0 : 2 * p : 2], x0[1 : 2 * p : 2]  # pairs (0, 1), (2, 3), ...
    out = interpolation_frames(method, x_a, x_b, lams, steps=args.steps, encode_steps=args.encode_steps,
                               convention=args.convention, batch_size=args.batch_size)
    prov = common.provenance(method, eval_seed=args.seed)
    rows = []
    modes = [m for m in INTERPOLATION_MODES if m in out]
    for mode in modes:
        frames = out[mode]
        first, last = endpoint_mse(frames, out["recon_a"], out["recon_b"])
        cols = dict(table="interpolation", mode=mode)
        if lams[0] == 0.0:
            rows.append(common.record(prov, "endpoint_mse", first, "-", lam=0.0, **cols))
        if lams[-1] == 1.0:
            rows.append(common.record(prov, "endpoint_mse", last, "-", lam=1.0, **cols))
        for lam, d in zip(lams[1:], consecutive_distances(frames, backend.lpips).tolist(), strict=True):
            rows.append(common.record(prov, "smoothness", d, backend.name, lam=lam, **cols))
    meta = dict(
        command="interpolate", steps=args.steps, encode_steps=args.encode_steps, convention=args.convention,
        num_pairs=p, lams=lams, source_indices=[int(i) for i in ds.source_indices[: 2 * p]],
        notes="docs/protocol.md §5.4: x_T by shifted DDIM inversion (encode_steps), DDIM decoding (steps) from "
              "Slerp(x_T) under Lerp(z) (z_lerp) or Lerp of G (g_lerp, PDAE only); pairs are held-out images "
              "(0,1), (2,3), ...; endpoint_mse vs the plain reconstructions on [0,1]; smoothness = the backend's "
              "distance (LPIPS-AlexNet, or the domain feature distance feat_dist) between consecutive frames, "
              "recorded at the later lam",
    )
    common.write_records(args.out, rows, **meta)
    if args.arrays:
        blocks, row_labels = [], []
        for i in range(p):
            for mode in modes:
                blocks.append(torch.cat([x_a[i : i + 1], out[mode][i].clamp(-1.0, 1.0), x_b[i : i + 1]]))
                row_labels.append(f"pair {i} {mode}")
        write_arrays(args.arrays, {"grid": torch.stack(blocks),
                                   "row_labels": row_labels,
                                   "col_labels": ["input a"] + [f"lam={v:g}" for v in lams] + ["input b"]},
                     **prov, table="interpolation", **meta)
    return 0


# ------------------------------------------------------------------------------------------------
# Attribute manipulation (Fig. 8, docs/protocol.md §2.5, §5.5).


def edit_latent(z: Tensor, direction: Tensor, strength: float, normalizer: Any) -> Tensor:
    """z' = denormalize(normalize(z) + s sqrt(D) d) with d = w_c / ||w_c|| (official PDAE code,
    sampler/manipulation.py, with sqrt(D) for its sqrt(512)).

    :param z: raw latents [N, D]; :param direction: unit direction in normalised-z space [D];
    :param normalizer: the latent classifier (its `normalize` / `denormalize`).
    """
    if direction.ndim != 1 or z.ndim != 2 or z.shape[1] != direction.shape[0]:
        raise ValueError(f"edit_latent: z [N, D] and direction [D] expected, "
                         f"got {tuple(z.shape)}, {tuple(direction.shape)}")
    step = strength * math.sqrt(z.shape[1]) * direction.to(z)
    return normalizer.denormalize(normalizer.normalize(z) + step)


def target_index(classifier: Any, name: str, names: Sequence[str]) -> int:
    """Output index of attribute (or, for a classifier on labels, class) `name` among `names`."""
    kind = classifier.method_kwargs.get("targets", "labels")
    if name not in names:
        raise ValueError(f"--attribute {name!r}: not among the classifier's {kind} ({', '.join(names)})")
    return list(names).index(name)


def target_probability(classifier: Any, z: Tensor, index: int) -> Tensor:
    """p(attribute | z) = sigmoid(logit_c) (attribute classifier) or softmax_c (label classifier).

    z: raw latents [N, D] -> [N]."""
    logits = classifier.predict_logits(z).double()
    if classifier.method_kwargs.get("targets", "labels") == "attributes":
        return torch.sigmoid(logits[:, index])
    return torch.softmax(logits, dim=1)[:, index]


def manipulate_images(
    method: Any,
    classifier: Any,
    x0: Tensor,
    index: int,
    strengths: Sequence[float],
    *,
    steps: int,
    encode_steps: int,
    convention: str = "paper",
    batch_size: int = 64,
) -> dict[float, Tensor]:
    """Edited images [N, C, H, W] for each strength s (s = 0: the plain inferred-x_T reconstruction)."""
    z = encode_all(method, x0, batch_size)
    x_T = infer_x_T(method, x0, z, encode_steps, convention=convention, batch_size=batch_size)
    z = z.to(model_device(classifier))
    direction = classifier.edit_direction(index)
    out = {}
    with torch.no_grad():
        for s in strengths:
            z_edit = edit_latent(z, direction, float(s), classifier)
            out[float(s)] = decode(method, z_edit, x_T, steps, convention=convention, batch_size=batch_size)
    return out


def run_manipulate(args: argparse.Namespace) -> int:
    from pdae.data import build_dataset

    device = common.resolve_device(args.device)
    method = common.load_model(args.autoencoder, "autoencoder", device)
    classifier = common.load_model(args.classifier, "classifier", device, companion_of=method)
    clf_ds = build_dataset(common.data_spec(classifier, args.data), split="train")
    kind = classifier.method_kwargs.get("targets", "labels")
    names = clf_ds.attribute_names if kind == "attributes" else clf_ds.class_names
    index = target_index(classifier, args.attribute, names)
    strengths = sorted({0.0, *(float(s) for s in args.strengths)})
    spec = common.data_spec(method, args.data)
    x0, _, ds = common.eval_images(spec, args.num_images)
    backend = common.backend_from_args(args, device)
    edits = manipulate_images(method, classifier, x0, index, strengths, steps=args.steps,
                              encode_steps=args.encode_steps, convention=args.convention, batch_size=args.batch_size)
    prov = common.provenance(method, eval_seed=args.seed)
    rows = []
    for s, img in edits.items():
        img = img.clamp(-1.0, 1.0)
        z_img = encode_all(method, img, args.batch_size).to(device)
        prob = target_probability(classifier, z_img, index).mean()
        identity = 1.0 - backend.lpips(img.to(device), x0.to(device)).double().mean()
        cols = dict(table="manipulation", attribute=args.attribute, strength=s)
        rows.append(common.record(prov, "attr_prob", float(prob), "-", **cols))
        rows.append(common.record(prov, "identity", float(identity), backend.name, **cols))
    meta = dict(
        command="manipulate", steps=args.steps, encode_steps=args.encode_steps, convention=args.convention,
        num_images=int(x0.shape[0]), classifier=str(args.classifier), targets=kind,
        source_indices=[int(i) for i in ds.source_indices[: x0.shape[0]]],
        notes="docs/protocol.md §2.5/§5.5: z_n' = z_n + s sqrt(D) w_c/||w_c|| in the classifier's normalised space, "
              "decoded from the x_T inferred by shifted DDIM inversion; strength 0 = plain reconstruction; "
              "attr_prob = classifier probability (sigmoid for attributes, softmax for labels) on E(edited image); "
              "identity = 1 - distance(edited, original input) with the metric backend's distance (LPIPS-AlexNet, "
              "or the domain feature distance feat_dist)",
    )
    common.write_records(args.out, rows, **meta)
    if args.arrays:
        k = min(args.grid_images, x0.shape[0])
        grid = torch.stack([x0[:k]] + [edits[s][:k].clamp(-1.0, 1.0) for s in strengths], dim=1)  # [k, 1+S, ...]
        write_arrays(args.arrays, {"grid": grid,
                                   "row_labels": [f"image {int(j)}" for j in ds.source_indices[:k]],
                                   "col_labels": ["input"] + [f"s={s:+g}" if s else "recon" for s in strengths]},
                     **prov, table="manipulation", attribute=args.attribute, **meta)
    return 0


# ------------------------------------------------------------------------------------------------
# Truncation-like effect (Fig. 9, docs/protocol.md §5.8).


def class_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of argmax(logits [N, K]) equal to labels [N]."""
    return float((logits.argmax(dim=1).cpu() == labels.cpu()).double().mean())


def truncation_labels(num_classes: int, per_class: int) -> Tensor:
    """Conditioning labels: class c for samples c * per_class ... (c + 1) * per_class - 1. -> [K * per_class]."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def run_truncation(args: argparse.Namespace) -> int:
    from eval.fid import compute_fid, fid_records, reference_stats
    from eval.sample import bootstrap_seed, reference_protocol
    from pdae.data import build_dataset
    from pdae.checkpoint import load_method

    device = common.resolve_device(args.device)
    method = load_method(args.model, device)
    if method.conditioning != "label":
        raise ValueError(f"{args.model}: --model must be a class-conditional PDAE (pdae_class), got {method.name!r}")
    if not args.feature_net:
        raise ValueError("truncation: --feature-net DIR is required (class accuracy of the samples)")
    feature_net = load_method(args.feature_net, device)
    num_classes = int(method.num_classes)
    if feature_net.num_classes != num_classes:
        raise ValueError(f"{args.feature_net}: feature net has {feature_net.num_classes} classes, "
                         f"the model {num_classes}")
    spec = common.data_spec(method, args.data)
    backend = common.backend_from_args(args, device)
    cuda = device.type == "cuda"
    if args.ref_stats:
        reference_input: Any = args.ref_stats
    else:
        ref_ds = build_dataset(spec, split="train")
        reference_input = torch.stack([ref_ds[i][0] for i in range(min(args.num_ref_images, len(ref_ds)))])
    reference, _ = reference_stats(reference_input, backend, batch_size=args.batch_size, cuda=cuda)  # once
    shape = image_shape(method, args.data)
    labels = truncation_labels(num_classes, args.num_samples)
    x_T = common.image_noise(shape, range(len(labels)), args.seed)
    prov = common.provenance(method, eval_seed=args.seed)
    rows, grid = [], []
    k = min(args.grid_per_class, args.num_samples)
    grid_index = torch.cat([torch.arange(k) + c * args.num_samples for c in range(num_classes)])
    for scale in args.scales:
        samples = decode(method, labels, x_T, args.steps, args.stop_fraction, convention=args.convention,
                         shift_scale=float(scale), batch_size=args.batch_size,
                         precision=args.precision).clamp(-1.0, 1.0)
        # Same bootstrap seed at every scale: the replicates of two scales resample the same samples (same x_T).
        res = compute_fid(samples, reference, backend, kid=False, batch_size=args.batch_size, cuda=cuda,
                          bootstrap=args.bootstrap, bootstrap_seed=bootstrap_seed(args.seed, args.steps))
        with torch.no_grad():
            logits = common.batched(lambda x: feature_net.predict_logits(x.to(device)).cpu(), samples, batch_size=args.batch_size)
        cols = dict(table="truncation", scale=float(scale), steps=args.steps)
        rows += fid_records(prov, res, **cols)
        rows.append(common.record(prov, "class_accuracy", class_accuracy(logits, labels), "-", **cols))
        grid.append(samples[grid_index])
    meta = dict(
        command="truncation", convention=args.convention, num_samples_per_class=args.num_samples,
        num_classes=num_classes, stop_fraction=args.stop_fraction, noise_seed=args.seed,
        reference=str(args.ref_stats) if args.ref_stats else f"first {len(reference_input)} training images",
        **(reference_protocol(reference) if args.ref_stats else {}),  # the file's data, size, split and selection
        bootstrap=args.bootstrap, precision=precision_mod.resolve(args.precision, device),
        feature_net=str(args.feature_net),
        notes="docs/protocol.md §5.8: DDIM from per-sample x_T (image_noise(seed)), same x_T at every scale, "
              "eps_hat = eps_theta - s sqrt(1 - alpha_bar) G(x_t, y, t); fid of all n_samples samples pooled vs "
              "the dataset reference, values = bootstrap replicates (units 'bootstrap': samples resampled with "
              "replacement, the same indices at every scale, reference fixed); class_accuracy = feature net "
              "argmax vs the conditioning label",
    )
    common.write_records(args.out, rows, **meta)
    if args.arrays:
        class_names = build_dataset(spec, split="train").class_names or [str(c) for c in range(num_classes)]
        write_arrays(args.arrays, {"grid": torch.stack(grid),
                                   "row_labels": [f"s={float(s):g}" for s in args.scales],
                                   "col_labels": [str(class_names[int(labels[i])]) for i in grid_index]},
                     **prov, table="truncation", **meta)
    return 0


# ------------------------------------------------------------------------------------------------
# CLI.


def _common_args(p: argparse.ArgumentParser, decode_steps: int, paper: str) -> None:
    p.add_argument("--steps", type=int, default=decode_steps, help=f"DDIM decoding steps ({paper})")
    p.add_argument("--convention", choices=("paper", "current"), default="paper",
                   help="DDIM respacing (docs/protocol.md §1.6)")
    p.add_argument("--out", required=True, help="records JSON")
    p.add_argument("--arrays", default=None, help="NPZ figure grid (+ JSON sidecar)")
    p.add_argument("--data", default=None, help="dataset spec YAML (default: the model's training data)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (per-sample generators)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=64)
    common.add_backend_args(p)


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("interpolate",
                              help="Fig. 7: interpolation between held-out images (endpoint, smoothness)")
    p.add_argument("--autoencoder", required=True, help="pdae or diffae model folder")
    p.add_argument("--num-pairs", type=int, default=2, help="pairs of held-out images (0,1), (2,3), ...")
    p.add_argument("--lams", type=float, nargs="+", default=list(DEFAULT_LAMS), help="interpolation coefficients")
    p.add_argument("--encode-steps", type=int, default=50, help="DDIM inversion steps for x_T (paper: 100)")
    _common_args(p, 50, "paper: 100")
    p.set_defaults(func=run_interpolate)

    p = subparsers.add_parser("manipulate", help="Fig. 8: attribute manipulation with a linear classifier on z")
    p.add_argument("--autoencoder", required=True, help="pdae or diffae model folder")
    p.add_argument("--classifier", required=True, help="latent classifier folder trained on this autoencoder's z")
    p.add_argument("--attribute", required=True, help="attribute name (or class name for a classifier on labels)")
    p.add_argument("--strengths", type=float, nargs="+", default=list(DEFAULT_STRENGTHS), help="edit strengths s")
    p.add_argument("--num-images", type=int, default=8, help="first N held-out images")
    p.add_argument("--grid-images", type=int, default=8, help="rows of the figure grid")
    p.add_argument("--encode-steps", type=int, default=50, help="DDIM inversion steps for x_T (official: 500)")
    _common_args(p, 50, "official: 200")
    p.set_defaults(func=run_manipulate)

    p = subparsers.add_parser("truncation", help="Fig. 9: class-conditional PDAE, FID and class accuracy vs G scale")
    p.add_argument("--model", required=True, help="class-conditional PDAE (pdae_class) folder")
    p.add_argument("--scales", type=float, nargs="+", default=list(DEFAULT_SCALES), help="scales s of G")
    p.add_argument("--num-samples", type=int, default=10, help="samples per class (paper: 50k in all)")
    p.add_argument("--stop-fraction", type=float, default=0.0, help="last fraction of steps without the shift")
    p.add_argument("--ref-stats", default=None, help="reference statistics file (`ref-stats`); default: computed "
                   "from the first --num-ref-images training images")
    p.add_argument("--num-ref-images", type=int, default=1000, help="training images for the default reference")
    p.add_argument("--bootstrap", type=int, default=FID_BOOTSTRAP,
                   help=f"bootstrap replicates of each FID, stored as the record's values (default {FID_BOOTSTRAP})")
    p.add_argument("--grid-per-class", type=int, default=2, help="samples per class in the figure grid")
    _common_args(p, 20, "paper: 100")
    common.add_precision_arg(p, "auto")
    p.set_defaults(func=run_truncation)
