"""The files of a training run besides its model folders: output checks, resume state, log and metadata.

pdae.training runs the loop; this module holds what it writes and reads around it, following `pdae.fsutil`:
the checks of `--out` / `--resume-dir` before anything is written (`check_output_paths`), the resume state
`<resume_dir>/state.pt` (written atomically by `atomic_torch_save`, read back by `read_resume_state` only when
its `run_fingerprint` matches: same config, seed, world size, inputs and precision), the JSONL log
`train_log.jsonl` cut back to the resume point (`log_lines_upto`), which state-dict entries training changes
(`trainable_state_keys`) and the metadata.json of the model folders and snapshots (`model_metadata`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pdae import fsutil
from pdae.config import RunConfig
from pdae.methods import Method
from pdae.provenance import code_version, sha256_bytes, utc_now
from pdae.run_control import DistInfo, TrainingError

STATE_FILE = "state.pt"
LOG_FILE = "train_log.jsonl"


def check_output_paths(out_dir: Path, resume_dir: Path) -> None:
    """`out_dir` must not exist; the resume folder must be ours (or missing/empty), separate from `out_dir`
    and on the same file system as the staging folder beside `out_dir` (files are renamed between them)."""
    if out_dir.exists() or out_dir.is_symlink():
        what = "folder" if out_dir.is_dir() else "file"
        raise TrainingError(f"{out_dir}: output {what} exists; remove it or choose another --out to train again")
    if fsutil.overlaps(out_dir, resume_dir):
        raise TrainingError(f"--resume-dir {resume_dir} and --out {out_dir} overlap (one is inside the other); "
                            "choose separate folders")
    fsutil.check_resume_folder(resume_dir)
    if not fsutil.same_filesystem(out_dir.parent, resume_dir.parent):
        raise TrainingError(f"--resume-dir {resume_dir} is not on the file system of --out {out_dir}; "
                            "choose a resume folder beside the output")


def atomic_torch_save(obj: Any, path: Path, staging: fsutil.RunStaging | None = None) -> None:
    """torch.save to the run's staging folder (else a hidden sibling), fsync, rename over `path`: `path` is the
    old or the new state, never a partial one; a failed write (disk full) is a one-line WriteError."""
    tmp = staging.new_path(path.name) if staging is not None else path.with_name(f".{path.name}.tmp{os.getpid()}")
    with fsutil.writing(path, cleanup=[tmp]):
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def run_fingerprint(method_name: str, cfg: RunConfig, seed: int, world: int, extra: dict[str, Any]) -> str:
    blob = json.dumps({"method": method_name, "config": cfg.to_dict(), "seed": seed, "world": world, **extra},
                      sort_keys=True, default=str)
    return sha256_bytes(blob.encode())[:16]


def read_resume_state(state_path: Path, fingerprint: str, resume_dir: Path) -> dict[str, Any]:
    """The resume state in `state_path` (its declared sizes checked first: no memory bomb), refused in one line
    (TrainingError) if unreadable or written by a run with another fingerprint."""
    from pdae.checkpoint import _check_declared_sizes

    _check_declared_sizes(state_path)  # no memory bomb: sizes bounded by the file's (one-line CheckpointError)
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state is reported in one line
        raise TrainingError(f"{state_path}: unreadable resume state ({type(exc).__name__}); "
                            "delete it to restart") from None
    if state.get("fingerprint") != fingerprint:
        raise TrainingError(f"{state_path}: resume state belongs to a different config/seed; "
                            f"delete {resume_dir} to restart")
    return state


def log_lines_upto(path: Path, images_seen: int, staging: fsutil.RunStaging | None = None) -> None:
    """Drop log entries written after the resume point (they will be written again), and a last line cut short
    by a kill (it is after the resume point too); the log is rewritten atomically."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(ln)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("images_seen"), int) and record["images_seen"] <= images_seen:
            keep.append(ln)
    fsutil.write_bytes_atomic(path, "".join(ln + "\n" for ln in keep).encode(), staging)


def trainable_state_keys(method: Method) -> set[str]:
    """State-dict keys that training changes (frozen priors are rebuilt from their own folder)."""
    return {n for n, p in method.named_parameters() if p.requires_grad} | {
        n for n, _ in method.named_buffers() if not n.startswith(("estimator.prior.",))
    }


def model_metadata(method_name: str, cfg: RunConfig, seed: int, images_seen: int, steps: int, wall_s: float,
                   dist_info: DistInfo, dpm_dir: Any, encoder_dir: Any, precision: str = "fp32") -> dict[str, Any]:
    """metadata.json of the final model folder and of every snapshot."""
    return {
        "method": method_name, "seed": seed, "images_seen": images_seen, "steps": steps,
        "batch_size": cfg.train.batch_size, "wall_time_s": round(wall_s, 3), "world_size": dist_info.world,
        "code_version": code_version(), "created": utc_now(), "torch": torch.__version__,
        "dpm": str(dpm_dir) if dpm_dir else None, "encoder": str(encoder_dir) if encoder_dir else None,
        "data": cfg.data, "precision": precision,
    }
