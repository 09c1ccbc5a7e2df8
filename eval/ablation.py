"""The loss-weighting ablation of PDAE (paper §3.4): `python -m eval ablation`.

    python -m eval ablation --runs SNR_DIR UNIFORM_DIR --out FILE [--images N]   (PDAE, method.weighting)

Every run is evaluated on the same held-out images with the same per-image x_T noise (`--seed`), at the same
training budget (`--images`: a snapshot of each run, and its log up to it; default the final models). Records:
table ablation, weighting, metric ssim | mse (with values / units "images" / eval_seed), loss_cv, loss_final
(the full description is eval.efficiency's docstring, which is also this sub-command's help; the sub-command
is registered by `eval.efficiency.register_cli`, the module eval.cli lists).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from eval.common import provenance, record, resolve_device, write_records
from eval.train_runs import (
    RECON_NOTE, ReconstructFn, add_common_args, check_positive, eval_set, evaluate_model, image_record, list_snapshots,
    loss_cv, read_train_log,
)


def snapshot_at(model_dir: str | Path, images: int | None) -> Path:
    """The folder of `model_dir`'s model after exactly `images` training images (a snapshot or the final model);
    None: the final model."""
    if images is None:
        return Path(model_dir)
    snaps = list_snapshots(model_dir)
    for snap in snaps:
        if snap.images_seen == images:
            return snap.folder
    seen = ", ".join(str(s.images_seen) for s in snaps)
    raise ValueError(f"{model_dir}: no snapshot at {images} images (has {seen}); add it to train.snapshot_images")


def ablation_records(run_dirs: Sequence[str | Path], *, steps: int = 20, num_images: int = 64, seed: int = 0,
                     batch_size: int = 64, device: Any = "cpu", data: str | None = None,
                     reconstruct: ReconstructFn | None = None, images: int | None = None) -> list[dict[str, Any]]:
    """Weighting ablation (paper §3.4): for each PDAE run, its `method.weighting` (snr | uniform), the
    reconstruction SSIM / MSE (per-image `values`: the same images and x_T noise for every run, so the runs pair
    image by image), loss_cv (last half of the log) and loss_final, all at the same budget: after `images`
    training images (a snapshot of a longer run, and the log up to it), else the final models."""
    if not run_dirs:
        raise ValueError("ablation needs PDAE model folders (--runs)")
    x0 = eval_set(run_dirs[0], data, num_images)
    rows: list[dict[str, Any]] = []
    for run in run_dirs:
        folder = snapshot_at(run, images)
        method, per_image = evaluate_model(folder, x0, steps=steps, seed=seed, batch_size=batch_size, device=device,
                                           metrics=("ssim", "mse"), reconstruct=reconstruct)
        if not method.has_shift:  # an autoencoder (evaluate_model) with G over a frozen prior: PDAE
            raise ValueError(f"{folder}: the weighting ablation compares PDAE runs, got {method.name!r}")
        prov = provenance(method)
        cols = {"table": "ablation", "weighting": method.method_kwargs.get("weighting", "snr"), "steps": steps}
        rows += [image_record(prov, k, v, "-", **cols, eval_seed=seed) for k, v in per_image.items()]
        log = read_train_log(run)
        losses = [float(r["loss"]) for r in log if images is None or int(r["images_seen"]) <= images]
        if not losses:
            raise ValueError(f"{run}: no logged loss up to {images} images")
        rows.append(record(prov, "loss_cv", loss_cv(losses), "-", **cols))
        rows.append(record(prov, "loss_final", losses[-1], "-", **cols))
    return rows


def run_ablation(args: argparse.Namespace) -> int:
    check_positive(args)
    if args.images is not None and args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    rows = ablation_records(args.runs, steps=args.steps, num_images=args.num_images, seed=args.seed,
                            batch_size=args.batch_size, device=resolve_device(args.device), data=args.data,
                            images=args.images)
    write_records(args.out, rows, notes=[RECON_NOTE, "loss_cv: population std / mean of the last half of the "
                                         "logged losses"], num_images=args.num_images, steps=args.steps,
                  seed=args.seed, images="final models" if args.images is None else args.images)
    print(args.out)
    return 0


def add_ablation_parser(subparsers: Any, description: str | None) -> argparse.ArgumentParser:
    """The `ablation` sub-command (called by eval.efficiency.register_cli, with its docstring as the help)."""
    q = subparsers.add_parser("ablation", help="loss-weighting ablation: PDAE snr vs uniform weighting",
                              description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--runs", nargs="+", required=True, help="PDAE model folders (method.weighting snr or uniform)")
    q.add_argument("--images", type=int, default=None,
                   help="compare every run after this many training images (a snapshot or the final model, and the "
                        "log up to it); default: the final models")
    add_common_args(q)
    q.set_defaults(func=run_ablation)
    return q
