"""Shared plumbing of the evaluations: provenance, tidy records, held-out images, per-image noise, backends.

Every evaluation writes *records*: one dict per measurement (tidy data) with provenance columns
(`dataset`, `method`, `seed`, `images_seen`, `code_version`, `backend`, ...) plus the measurement's own
columns (`metric`, `value`, and e.g. `steps`, `x_T`, `t`, `scale`). `eval.tables` aggregates them over
seeds and puts the paper's numbers beside ours.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from pdae.device import resolve_device  # noqa: F401 - the resolver of every command

RECORD_FORMAT = "pdae-bench-records/1"
# Columns every record carries (filled by `provenance`); "-" where a column does not apply.
PROVENANCE_COLUMNS = ("dataset", "method", "seed", "images_seen", "code_version", "config")


def provenance(method: Any, label: str | None = None, eval_seed: int | None = None) -> dict[str, Any]:
    """Provenance columns of a model loaded with `pdae.checkpoint.load_method` (from its metadata.json).

    `seed` is the model's training seed; `eval_seed` (when given) the seed of the evaluation's own draws
    (noise, x_T, image subsets). They differ for the DPM and DDIM rows: one model (seed 0), evaluated in
    every seed's job, so paired comparisons (e.g. the gap reduction) match rows on `eval_seed`."""
    meta = dict(getattr(method, "metadata", {}) or {})
    data = meta.get("data") or {}
    folder = getattr(method, "folder", None)
    return {
        "dataset": data.get("name", meta.get("dataset", "unknown")) if isinstance(data, dict) else str(data),
        "method": label or method.name,
        "seed": meta.get("seed", "-"),
        "images_seen": meta.get("images_seen", "-"),
        "code_version": meta.get("code_version", "-"),
        "config": str(folder) if folder is not None else "-",
        **({} if eval_seed is None else {"eval_seed": int(eval_seed)}),
    }


def record(prov: dict[str, Any], metric: str, value: float, backend: str = "-", **columns: Any) -> dict[str, Any]:
    """One tidy measurement row."""
    value = float(value)
    return {**prov, **columns, "backend": backend, "metric": metric, "value": value}


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON via a temporary file and rename, so a crash never leaves a half-written result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_records(path: str | os.PathLike, rows: Sequence[dict[str, Any]], **meta: Any) -> Path:
    """Write records (and free-form metadata such as notes) as one JSON file; non-finite values are refused."""
    for row in rows:
        if not math.isfinite(row["value"]):
            raise ValueError(f"{path}: non-finite value for {row.get('metric')} ({row['value']}); refusing to write")
    return write_json_atomic(path, {"format": RECORD_FORMAT, "meta": meta, "rows": list(rows)})


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable records file ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: not a records file (format {RECORD_FORMAT!r} expected)")
    return list(obj["rows"])


def image_noise(shape: Sequence[int], indices: Iterable[int], seed: int, device: str | torch.device = "cpu") -> Tensor:
    """Gaussian noise for images `indices`, one generator per image (EDM's StackedRandomGenerator idea):
    image i gets the same noise whatever the batch size or order. -> [len(indices), *shape]."""
    out = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
           for i in indices]
    return torch.stack(out).to(device)


def batched(fn: Callable[..., Tensor], *tensors: Tensor, batch_size: int) -> Tensor:
    """Apply `fn` to aligned slices of `tensors` (dim 0) and concatenate the results."""
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i : i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])


def eval_images(spec: dict[str, Any], count: int, split: str = "test") -> tuple[Tensor, Tensor, Any]:
    """The first `count` images of the held-out split (a fixed index list), their labels, and the dataset.

    -> images [N, C, H, W] in [-1, 1], labels [N]; the dataset's `source_indices[:N]` identify them."""
    from pdae.data import build_dataset

    ds = build_dataset(spec, split=split)
    n = min(count, len(ds))
    images = torch.stack([ds[i][0] for i in range(n)])
    labels = torch.as_tensor(ds.labels[:n]).long()
    return images, labels, ds


def data_spec(method: Any, override: str | None = None) -> dict[str, Any]:
    """The dataset spec to evaluate on: `override` a YAML/JSON spec file (a `data:` mapping or the mapping
    itself), or a folder (an image folder or LMDB) replacing `path` of the model's training data (as
    `pdae train --data`); else the model's training data. A folder of another kind than the model's data (an
    image folder for a model of digits or of an LMDB) becomes an image-folder spec with the model's image size,
    channels and split settings; an LMDB for a model of other data needs a spec file (its variant)."""
    if override:
        import yaml

        path = Path(override)
        if path.is_dir():
            return _folder_spec(_model_spec(method, "pass --data SPEC.yaml"), path)
        if not path.is_file():
            raise ValueError(f"{path}: data spec file or dataset folder not found")
        try:
            spec = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a YAML/JSON data spec ({type(exc).__name__})") from None
        spec = spec.get("data", spec) if isinstance(spec, dict) else spec
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: a data spec is a mapping (name, path, image_size, ...)")
        return spec
    return _model_spec(method, "pass --data SPEC.yaml")


def _folder_spec(model: dict[str, Any], path: Path) -> dict[str, Any]:
    """`--data FOLDER`: the model's spec with `path` replaced when the folder is of the same kind (as before), else
    an image-folder spec with the model's image size, channels and split settings (an LMDB is recognised by its
    `data.mdb`; one for a model of other data needs a spec file, for its variant)."""
    kind = "lmdb" if (path / "data.mdb").is_file() else "folder"
    if model.get("name") == kind:
        return {**model, "path": str(path)}
    if kind == "lmdb":  # and the model's data is not an LMDB: the key layout is unknown
        raise ValueError(f"--data {path}: an LMDB needs its variant (ffhq, celebahq, celeba, lsun); "
                         "pass --data SPEC.yaml with name: lmdb, variant: ...")
    keep = ("image_size", "channels", "seed", "test_fraction")
    return {"name": kind, "path": str(path), **{k: model[k] for k in keep if model.get(k) is not None}}


def data_slug(spec: dict[str, Any]) -> str:
    """The short name of an evaluation dataset: variant (else name) and image size, e.g. celebahq128 for the
    Diff-AE CelebA-HQ LMDB at 128 px (the PDAE paper's Table 1 evaluation set), digits16."""
    return f"{spec.get('variant') or spec.get('name', '?')}{spec.get('image_size', '')}"


def describe_data(spec: dict[str, Any]) -> str:
    """The dataset evaluated, in words: its slug, the loader and the path where there is one."""
    where = " ".join(str(x) for x in (spec.get("name"), spec.get("path")) if x)
    return f"{data_slug(spec)} ({where})" if where and where != data_slug(spec) else data_slug(spec)


def model_image_size(method: Any) -> int | None:
    """Side of the images the model was trained on, from its metadata's data spec (None if unknown)."""
    data = (getattr(method, "metadata", {}) or {}).get("data")
    return int(data["image_size"]) if isinstance(data, dict) and "image_size" in data else None


def _model_spec(method: Any, hint: str) -> dict[str, Any]:
    meta = getattr(method, "metadata", {}) or {}
    if not isinstance(meta.get("data"), dict):
        raise ValueError(f"{getattr(method, 'folder', 'model')}: metadata has no data spec; {hint}")
    spec = dict(meta["data"])
    spec.pop("hflip", None)
    return spec


# Metric backends from the command line.
def add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("domain", "standard"), default="domain",
                        help="metric backend: domain (feature net trained on the dataset; offline) or standard "
                        "(Inception-v3 FID + LPIPS-AlexNet weights from the torch cache or the paths below)")
    parser.add_argument("--feature-net", default=None, help="domain backend: feature-net model folder")
    parser.add_argument("--alexnet-weights", default=None, help="standard backend: alexnet-owt-7be5be79.pth")
    parser.add_argument("--inception-weights", default=None, help="standard backend: weights-inception-2015-12-05-6726825d.pth")
    parser.add_argument("--fid-backend", choices=("backend", "pytorch-fid"), default="backend",
                        help="FID/KID features: backend (the --backend's own) or pytorch-fid (pytorch-fid's FID "
                        "Inception, resize and Fréchet distance, as Diff-AE and PDAE; weights from --fid-weights)")
    parser.add_argument("--fid-weights", default=None,
                        help="pytorch-fid FID backend: pt_inception-2015-12-05-6726825d.pth "
                        "(default: $TORCH_HOME/hub/checkpoints)")


def backend_from_args(args: argparse.Namespace, device: str | torch.device = "cpu") -> Any:
    from eval.backends import domain_backend, standard_backend, with_fid_backend

    fid_backend, fid_weights = getattr(args, "fid_backend", "backend"), getattr(args, "fid_weights", None)
    if args.backend == "standard":
        return standard_backend(args.alexnet_weights, args.inception_weights, fid_backend=fid_backend,
                                fid_weights=fid_weights).to(device)
    if not args.feature_net:
        raise ValueError("--feature-net DIR is required with --backend domain")
    if fid_backend == "pytorch-fid":
        from eval.fid_inception import find_weights_file

        find_weights_file(fid_weights)  # a missing file fails before the feature net is loaded
    from pdae.checkpoint import load_method

    return with_fid_backend(domain_backend(load_method(args.feature_net, device).feature_network()), fid_backend,
                            fid_weights).to(device)


def is_image_decoder(method: Any) -> bool:
    """A diffusion model of images, which `eval.sample.decode` runs: the plain DPM, PDAE (also class-conditional)
    and Diff-AE (capabilities of `pdae.methods.Method`)."""
    return bool(getattr(method, "is_diffusion", False)) and getattr(method, "input_kind", None) == "images"


def can_reconstruct(method: Any) -> bool:
    """An image decoder whose condition, if any, is its own code z = E(x0): PDAE and Diff-AE, and the plain DPM
    (DDIM inversion alone). The models of the reconstruction table (paper Table 1) and of the gap (Fig. 1/5)."""
    return is_image_decoder(method) and method.conditioning in ("none", "z")


# What each command-line model flag accepts: a test on the capabilities of `pdae.methods.Method`.
MODEL_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "autoencoder": (lambda m: m.has_encoder, "pdae or diffae"),
    "latent": (lambda m: m.is_diffusion and m.input_kind == "latents", "a latent DPM"),
    "classifier": (lambda m: not m.is_diffusion and m.input_kind == "latents", "a latent classifier"),
    "dpm": (lambda m: is_image_decoder(m) and m.conditioning == "none", "a plain DPM"),
}


def load_model(folder: str, flag: str, device: str | torch.device = "cpu", companion_of: Any = None) -> Any:
    """`load_method(folder)` checked against what `--flag` accepts (MODEL_KINDS); with `companion_of` (an
    autoencoder), also check that the model works on that autoencoder's latent dimension. One-line errors."""
    from pdae.checkpoint import load_method

    method = load_method(folder, device)
    accepts, description = MODEL_KINDS[flag]
    if not accepts(method):
        raise ValueError(f"{folder}: --{flag} must be {description}, got {method.name!r}")
    if companion_of is not None and int(method.latent_dim) != int(companion_of.latent_dim):
        raise ValueError(f"{folder}: latent dim {int(method.latent_dim)} != "
                         f"the autoencoder's {companion_of.latent_dim}")
    return method


def add_precision_arg(p: argparse.ArgumentParser, default: str) -> None:
    """--precision of the networks while sampling (pdae.precision): auto = bf16 where the device has it."""
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=default,
                   help=f"network precision while sampling (default {default}: bf16 autocast on a GPU with bf16 or a "
                        "CPU with AVX512-BF16/AMX, else fp32; schedules, DDIM arithmetic and metrics stay fp32)")
