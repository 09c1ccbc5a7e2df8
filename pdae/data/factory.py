"""The dataset factory (`build_dataset`) and the dataset fingerprint recorded in provenance files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pdae.data.base import ImageDataset
from pdae.data.diffae_lmdb import LmdbDataset, lmdb_length
from pdae.data.embedded import DigitsDataset, ShapesDataset, _load_digits
from pdae.data.folder import FolderDataset, list_image_files
from pdae.data.spec import SPLITS, DataError, resolve_spec

_SOURCES: dict[str, type[ImageDataset]] = {
    "digits": DigitsDataset, "shapes": ShapesDataset, "folder": FolderDataset, "lmdb": LmdbDataset,
}


def build_dataset(spec: dict, split: str = "train") -> ImageDataset:
    """Build the dataset a spec describes (`resolve_spec` lists the keys); `split` in train | test | all."""
    resolved = resolve_spec(spec)
    if split not in SPLITS:
        raise DataError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    return _SOURCES[resolved["name"]](resolved, split)


def _content_size(resolved: dict) -> dict[str, int]:
    """Cheap content summary for provenance: image count and bytes on disk (no decoding)."""
    name = resolved["name"]
    if name == "digits":
        return {"images": len(_load_digits()[1])}
    if name == "shapes":
        return {"images": resolved["num_images"]}
    if name == "folder":
        files = list_image_files(resolved["path"], resolved["recursive"])
        size = sum((Path(resolved["path"]) / f).stat().st_size for f in files)
        out = {"images": len(files), "bytes": size}
    else:
        path = Path(resolved["path"])
        data_file = path / "data.mdb" if path.is_dir() else path
        out = {"images": lmdb_length(path), "bytes": data_file.stat().st_size}
    for key in ("labels", "attributes_file"):
        if resolved.get(key) is not None:
            if not Path(resolved[key]).is_file():
                raise DataError(f"{resolved[key]}: {key} file does not exist")
            out[f"{key}_bytes"] = Path(resolved[key]).stat().st_size
    return out


def dataset_fingerprint(spec: dict) -> str:
    """Stable 16-hex-digit hash of the resolved spec and the content size, for provenance files."""
    resolved = resolve_spec(spec)
    payload = json.dumps({"spec": resolved, "content": _content_size(resolved)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
