"""`pdae` command line: train, import published checkpoints, benchmark.

Examples:
  pdae train dpm --config config/train/dpm.yaml --out results/digits/dpm/model
  pdae train pdae --config pdae.yaml --dpm results/digits/dpm/model --out results/digits/pdae/seed0/model --seed 0
  torchrun --standalone --nproc_per_node 4 -m pdae train diffae --config diffae.yaml --out runs/diffae
  pdae import pdae-dpm pre-trained-dpms/ffhq128 --out models/ffhq128_dpm
  pdae bench --preset embedded --batch-size 32
"""

from __future__ import annotations

import argparse
import sys

TRAIN_METHODS = {"dpm": "dpm", "pdae": "pdae", "pdae-class": "pdae_class", "diffae": "diffae",
                 "latent": "latent", "classifier": "classifier", "feature-net": "feature_net"}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one method (resumable; writes a model folder at the end)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train one method with the shared training loop. Rerunning the same command after an "
        "interruption resumes from <out>.resume/.",
        epilog="example: pdae train pdae --config pdae.yaml --dpm results/digits/dpm/model --out runs/pdae --seed 1",
    )
    p.add_argument("method", choices=sorted(TRAIN_METHODS), help="what to train")
    p.add_argument("--config", required=True, help="training config (YAML/JSON: data, diffusion, nets, method, train)")
    p.add_argument("--out", required=True, help="model folder to create (must not exist)")
    p.add_argument("--data", default=None, help="override config data.path (folder or LMDB)")
    p.add_argument("--dpm", default=None, help="trained DPM model folder (pdae, pdae-class)")
    p.add_argument("--encoder", default=None, help="trained autoencoder model folder (latent, classifier)")
    p.add_argument("--seed", type=int, default=0, help="run seed (weights, data order, noise)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume-dir", default=None, help="resume state folder (default: <out>.resume)")
    p.add_argument("--images", type=int, default=None, help="override train.images (budget in images seen)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def _run_train(args: argparse.Namespace) -> int:
    from pdae.config import load_run_config
    from pdae.training import train

    cfg = load_run_config(args.config)
    if args.data is not None:
        cfg.data["path"] = args.data
    if args.images is not None:
        cfg.train.images = args.images
    result = train(
        TRAIN_METHODS[args.method], cfg, args.out, dpm_dir=args.dpm, encoder_dir=args.encoder, seed=args.seed,
        device=args.device, resume_dir=args.resume_dir, progress=not args.no_progress,
    )
    print(f"wrote {result.out_dir} ({result.images_seen} images, {result.steps} steps, {result.wall_time_s:.1f} s)")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="training throughput (images/s) of DPM, PDAE and Diff-AE",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="embedded", help="embedded | ffhq128 (network sizes)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per step (default: the preset's training batch: embedded 32, ffhq128 64)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method (after warm-up)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="precision of the step, as train.amp: auto = bf16 for image nets on bf16 hardware")
    p.add_argument("--out", default=None, help="also write the numbers to this JSON file")


def _run_bench(args: argparse.Namespace) -> int:
    from pdae.bench import run_benchmark

    run_benchmark(args.preset, args.batch_size, args.steps, args.warmup, args.device, args.out, args.amp)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    from pdae.importers import register_cli

    register_cli(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pdae.training import TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _run_train(args)
        if args.command == "bench":
            return _run_bench(args)
        return int(args.func(args) or 0)
    except (ValueError, TrainingError, FileNotFoundError, PermissionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
