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
import json
import signal
import sys
import threading
from pathlib import Path


def train_methods() -> dict[str, str]:
    """`pdae train` name -> method name, for every method of the registry (pdae.methods.registry)."""
    from pdae.methods import registry

    return {spec.cli: spec.name for spec in registry.specs()}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one method (resumable; writes a model folder at the end)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train one method with the shared training loop. Rerunning the same command after an "
        "interruption resumes from <out>.resume/.",
        epilog="example: pdae train pdae --config pdae.yaml --dpm results/digits/dpm/model --out runs/pdae --seed 1",
    )
    p.add_argument("method", choices=sorted(train_methods()), help="what to train")
    p.add_argument("--config", required=True, help="training config (YAML/JSON: data, diffusion, nets, method, train)")
    p.add_argument("--out", required=True, help="model folder to create (must not exist; written atomically at the end, "
                   "locked by <out>.lock while the run lasts)")
    p.add_argument("--data", default=None, help="override config data.path (folder or LMDB)")
    p.add_argument("--dpm", default=None, help="trained DPM model folder (pdae, pdae-class)")
    p.add_argument("--encoder", default=None, help="trained autoencoder model folder (latent, classifier)")
    p.add_argument("--seed", type=int, default=0, help="run seed (weights, data order, noise)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume-dir", default=None,
                   help="resume state folder (default: <out>.resume); must be missing, empty or written by pdae train")
    p.add_argument("--images", type=int, default=None, help="override train.images (budget in images seen)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (terminal) or periodic progress lines (log file, see pdae.progress)")


def _run_train(args: argparse.Namespace) -> int:
    from pdae.config import ConfigError, check_run_config, load_run_config
    from pdae.data import DataError
    from pdae.training import train

    cfg = load_run_config(args.config)
    if args.data is not None:
        cfg.data["path"] = args.data
    if args.images is not None:
        cfg.train.images = args.images
    try:  # every value, before any work (train() checks again for API callers)
        method = train_methods()[args.method]
        check_run_config(method, cfg, args.dpm, args.encoder, check_inputs=True)
    except (ConfigError, DataError) as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    result = train(
        method, cfg, args.out, dpm_dir=args.dpm, encoder_dir=args.encoder, seed=args.seed,
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


def _check_bench_out(path: Path) -> None:
    """--out may be missing or an earlier `pdae bench` record (replaced); anything else is the user's: refused."""
    from pdae.fsutil import OutputError

    if not path.exists() and not path.is_symlink():
        return
    try:
        ours = path.is_file() and "pdae_over_diffae" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise OutputError(f"{path}: --out exists and is not a `pdae bench` record; refusing to replace it, choose "
                          "another --out")


def _run_bench(args: argparse.Namespace) -> int:
    from pdae.bench import run_benchmark
    from pdae.fsutil import OutputLock, make_parent, write_bytes_atomic

    if args.out is None:
        run_benchmark(args.preset, args.batch_size, args.steps, args.warmup, args.device, None, args.amp)
        return 0
    out = Path(args.out)
    _check_bench_out(out)
    with OutputLock(out):
        _check_bench_out(out)
        record = run_benchmark(args.preset, args.batch_size, args.steps, args.warmup, args.device, None, args.amp)
        make_parent(out)
        write_bytes_atomic(out, (json.dumps(record, indent=2) + "\n").encode())  # whole or not at all
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    from pdae.importers import register_cli

    register_cli(sub)
    _add_bench(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop: unwinds like Ctrl-C, so that temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every expected failure (a bad file or value, a refused output, a full disk, out of
    memory) is one line on stderr and exit status 2; a run stopped by SIGINT/SIGTERM is one line and
    128 + the signal's number (130, 143)."""
    from pdae.device import check_device
    from pdae.fsutil import OutputError
    from pdae.training import TrainingError, TrainingInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # a training run stops at a step boundary instead (StopSignals)
    try:
        check_device(args)
        if args.command == "train":
            return _run_train(args)
        if args.command == "bench":
            return _run_bench(args)
        return int(args.func(args) or 0)
    except TrainingInterrupted as exc:
        print(f"interrupted: {_first_line(exc)}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt as exc:
        print("interrupted: stopped at once; every file written so far is complete and temporary files are "
              "removed (a training run keeps its last resume state)", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except (ValueError, TrainingError, OutputError) as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # WriteError (disk full ...), a missing or unreadable path
        where = f"{exc.filename}: " if getattr(exc, "filename", None) and str(exc.filename) not in str(exc) else ""
        reason = exc.strerror if exc.strerror and where else _first_line(exc)
        print(f"error: {where}{reason}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: out of memory while running `pdae {args.command}`", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
