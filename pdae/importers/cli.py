"""Command line: `pdae import KIND SRC --out DIR` for every import kind (PDAE, Diff-AE, foreign priors)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pdae.checkpoint import CheckpointError
from pdae.importers.common import check_source_kind
from pdae.importers.diffae import (
    AUTO_PRESET,
    DEFAULT_PRESET,
    DIFFAE_PRESETS,
    import_diffae_autoencoder,
    import_diffae_ddim,
    import_diffae_latent,
)
from pdae.importers.pdae import import_pdae_autoencoder, import_pdae_dpm, import_pdae_latent

# ---------------------------------------------------------------------------------------------------
# Command line: `pdae import KIND SRC --out DIR`.

IMPORT_KINDS = (
    "pdae-dpm", "diffae-ddim", "pdae-autoencoder", "diffae-autoencoder", "pdae-latent", "diffae-latent", "diffusers", "adm",
)
# Foreign priors (issue 7): a diffusers UNet2DModel folder or an openai guided/improved-diffusion checkpoint.
_PRIOR_KINDS = ("diffusers", "adm")
_DESCRIPTION = (
    "Import published PDAE and Diff-AE checkpoints into our model-folder format (`pdae.checkpoint`). "
    "Pickles are loaded without executing code."
)
_DIFFAE_IMPORTERS = {
    "diffae-ddim": import_diffae_ddim,
    "diffae-autoencoder": import_diffae_autoencoder,
    "diffae-latent": import_diffae_latent,
}

_EPILOG = """\
examples:
  pdae import pdae-dpm pre-trained-dpms/ffhq128 --out models/ffhq128_dpm
  pdae import pdae-autoencoder trained-models/autoencoder/ffhq128 --out models/ffhq128_pdae
  pdae import diffae-ddim checkpoints/ffhq128_ddpm_130M/last.ckpt --out models/ffhq128_ddim
  pdae import diffae-autoencoder checkpoints/ffhq128_autoenc_130M/last.ckpt --out models/ffhq128_diffae
  pdae import diffae-latent checkpoints/horse128_autoenc_latent/last.ckpt --preset horse128 --out models/h
  pdae import pdae-latent trained-models/latent_denoise_fn/ffhq128 --latents trained-models/latents/ffhq.pt --out models/l
  pdae import diffae-ddim small/last.ckpt --preset auto --out models/small   # read hyper_parameters
  pdae import diffusers ddpm-cifar10-32 --out models/cifar10_dpm             # a google/ddpm-* folder
  pdae import adm 256x256_diffusion_uncond.pt --flags "$MODEL_FLAGS $DIFFUSION_FLAGS" --out models/adm256
"""


def _parse_config_json(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else value
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"--config-json {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"--config-json: not a JSON object or a file holding one ({exc.msg})") from None
    if not isinstance(data, dict):
        raise CheckpointError("--config-json: expected a JSON object {component: {argument: value}}")
    return data


def _run_import(args: argparse.Namespace) -> int:
    """`pdae import`: the output is checked first (missing, empty, or one of our model folders with --force;
    anything else is refused), locked (`<out>.lock`) for the whole import, and replaced only once the new
    folder is complete; a source that fails leaves it untouched."""
    from pdae.fsutil import OutputLock, RunStaging, check_replaceable

    check_replaceable(args.out, force=args.force)
    with OutputLock(args.out), RunStaging(args.out):  # temporary files: .<out>.pdae-staging, removed on exit
        check_replaceable(args.out, force=args.force)  # again, under the lock
        return _run_import_locked(args)


def _run_import_locked(args: argparse.Namespace) -> int:
    kind = args.kind
    check_source_kind(kind, args.src)
    if args.latents is not None and kind != "pdae-latent":
        raise CheckpointError(f"--latents applies to pdae-latent only, not {kind}")
    if kind in _PRIOR_KINDS:
        from pdae.importers.foreign import import_prior

        if kind == "diffusers" and (args.flags or args.family):
            raise CheckpointError("--flags/--family apply to adm imports only")
        opts = {"flags": args.flags or "", "family": args.family or "guided"} if kind == "adm" else {}
        out = import_prior(kind, args.src, args.out, **opts)  # replaces an existing (ours, --force) folder atomically
    elif kind in _DIFFAE_IMPORTERS:
        if args.dpm_config is not None:
            raise CheckpointError(f"--dpm-config applies to pdae-autoencoder only, not {kind}")
        out = _DIFFAE_IMPORTERS[kind](
            args.src, args.out, args.preset or DEFAULT_PRESET, config=_parse_config_json(args.config_json), force=args.force
        )
    else:
        if args.preset is not None:
            raise CheckpointError(f"--preset applies to the diffae-* imports only; {kind} reads its config.yml")
        if kind == "pdae-dpm":
            if args.config_json is not None or args.dpm_config is not None:
                raise CheckpointError("pdae-dpm takes no --config-json/--dpm-config: its config.yml is complete")
            out = import_pdae_dpm(args.src, args.out, force=args.force)
        elif kind == "pdae-latent":
            if args.config_json is not None or args.dpm_config is not None:
                raise CheckpointError("pdae-latent takes no --config-json/--dpm-config: its config.yml is complete")
            out = import_pdae_latent(args.src, args.out, latents=args.latents, force=args.force)
        else:
            out = import_pdae_autoencoder(
                args.src, args.out, dpm_config=args.dpm_config, config=_parse_config_json(args.config_json), force=args.force
            )
    from pdae.checkpoint import load_model_folder

    folder = load_model_folder(out)
    n_params = sum(t.numel() for t in folder.tensors.values())
    print(f"wrote {out} (method {folder.method}, components {', '.join(folder.config['components'])}, {n_params:,} values)")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `import` sub-command to `subparsers`; it sets `func` (returns the exit code)."""
    parser = subparsers.add_parser(
        "import",
        help="convert a published PDAE / Diff-AE checkpoint into a model folder",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=IMPORT_KINDS, help="layout of SRC (docs/protocol.md §3)")
    parser.add_argument("src", help="official folder (pdae-*, diffusers) or file (diffae-*: Lightning last.ckpt; adm: .pt)")
    parser.add_argument("--out", required=True, help="model folder to write (must not exist unless --force)")
    parser.add_argument(
        "--preset",
        default=None,
        help=f"diffae-*: architecture, one of {', '.join(DIFFAE_PRESETS)} or '{AUTO_PRESET}' "
        f"(the checkpoint's hyper_parameters); default {DEFAULT_PRESET}",
    )
    parser.add_argument(
        "--config-json",
        default=None,
        help='constructor-argument overrides per component, JSON or a JSON file, e.g. \'{"unet": {"base_channels": 32}}\'',
    )
    parser.add_argument("--dpm-config", default=None, help="pdae-autoencoder: the pre-trained DPM's config.yml or folder")
    parser.add_argument("--latents", default=None,
                        help="pdae-latent: the latent statistics file {mean, std} (official "
                        "trained-models/latents/<name>.pt); default: config.yml's inferred_latents, looked up next to "
                        "and above the folder")
    parser.add_argument("--flags", default=None,
                        help='adm: the checkpoint\'s guided-diffusion script flags, e.g. "--image_size 256 --learn_sigma True ..."')
    parser.add_argument("--family", choices=("guided", "improved"), default=None,
                        help="adm: guided-diffusion (default) or improved-diffusion checkpoint")
    parser.add_argument("--force", action="store_true", help="replace an existing folder at --out")
    parser.set_defaults(func=_run_import)
    return parser
