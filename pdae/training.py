"""One training loop for every method: the DPM, PDAE, Diff-AE, the latent DPM and the classifiers.

The loop only sees the method interface (`loss`, `trainable_parameters`, `components`). Budget in images
seen (the paper's unit), Adam/AdamW, EMA of the trainable parameters (with a warm-up), optional horizontal
flip, bf16 autocast where the hardware has it (`amp_enabled`), channels_last on CUDA, DistributedDataParallel
under `torchrun`, generators seeded per rank from the run seed, a JSONL log and a tqdm bar.

Resume: every `resume_every_images` the whole training state (weights, EMA, optimizer, RNG states,
images seen) is written atomically to `<out>.resume/state.pt`; rerunning the same command continues from
it, and the result is bitwise equal to an uninterrupted run (CPU). The final model folder (EMA weights)
is written once, at the end, atomically; then the resume directory is removed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdae.config import RunConfig, TrainConfig
from pdae.methods import Method, build_method, export_method, load_method
from pdae.provenance import code_version, sha256_bytes, utc_now

STATE_FILE = "state.pt"
LOG_FILE = "train_log.jsonl"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message is one line."""


# Distributed set-up.
@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda requested but no CUDA device is available")
    return torch.device(device)


# Data order: a fixed permutation per epoch, so the sample at global position k depends only on (seed, k).
def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def global_indices(seed: int, n: int, start: int, count: int) -> Tensor:
    """Dataset indices of global samples start .. start+count-1 (epochs reshuffled from the seed)."""
    out, pos = [], start
    while pos < start + count:
        epoch, offset = divmod(pos, n)
        take = min(n - offset, start + count - pos)
        out.append(epoch_permutation(seed, epoch, n)[offset : offset + take])
        pos += take
    return torch.cat(out)


class BatchSource:
    """Batches of (x, y) by dataset index, in-process or through DataLoader workers."""

    def __init__(self, dataset: Any, num_workers: int) -> None:
        self.dataset = dataset
        self.num_workers = num_workers

    def get(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        if self.num_workers == 0 or len(indices) < 2 * self.num_workers:
            items = [self.dataset[int(i)] for i in indices]
        else:
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(self.dataset, indices.tolist()),
                batch_size=max(1, len(indices) // self.num_workers), num_workers=self.num_workers,
            )
            items = [(x, y) for xb, yb in loader for x, y in zip(xb, yb)]
        xs = torch.stack([torch.as_tensor(it[0]) for it in items])
        ys = torch.stack([torch.as_tensor(it[1]) for it in items])
        return xs, ys


class TensorPairs(torch.utils.data.Dataset):
    """(z, y) pairs of precomputed latents."""

    def __init__(self, z: Tensor, y: Tensor) -> None:
        self.z, self.y = z, y

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.z[i], self.y[i]


@torch.no_grad()
def encode_dataset(encoder: Method, dataset: Any, device: torch.device, batch_size: int = 256) -> Tensor:
    """z = E(x0) for every image (EMA encoder, no augmentation; docs/protocol.md §1.8). -> [N, D] on CPU."""
    zs = []
    for start in range(0, len(dataset), batch_size):
        x = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        zs.append(encoder.encode(x.to(device)).float().cpu())
    return torch.cat(zs)


def dataset_targets(dataset: Any, targets: str) -> Tensor:
    if targets == "attributes":
        attrs = getattr(dataset, "attributes", None)
        if attrs is None:
            raise ValueError("method.targets: attributes requested but the dataset has none")
        return torch.as_tensor(attrs).float()
    return torch.as_tensor(dataset.labels).long()


def data_info(dataset: Any) -> dict[str, Any]:
    attrs = getattr(dataset, "attributes", None)
    return {
        "image_size": int(dataset.image_size),
        "channels": int(dataset.channels),
        "num_classes": int(getattr(dataset, "num_classes", 0) or 0),
        "num_attributes": 0 if attrs is None else int(torch.as_tensor(attrs).shape[1]),
    }


def ema_decay_at(decay: float, n: int, warmup: bool = True) -> float:
    """Decay of the n-th EMA update (n = 1, 2, ...): min(decay, (1 + n) / (10 + n)) with warm-up, else `decay`.

    The warm-up is latent-diffusion's `LitEma` rule (also Diff-AE's guided-diffusion lineage uses a constant
    decay; the official PDAE and Diff-AE trainers run 0.9999 from step 1, harmless at their 10^5-10^6 steps).
    At a few hundred steps a constant decay exports mostly the random initialisation (its weight after N
    updates is decay^N: 0.999^391 = 0.68); with the warm-up it is prod_n (1 + n)/(10 + n) < 1e-9 at N = 391.
    """
    if n < 1:
        raise ValueError(f"EMA update index starts at 1, got {n}")
    return min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay


# EMA of the trainable parameters (every step; only params with requires_grad, as the official code).
class EMA:
    def __init__(self, method: Method, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.names = [n for n, p in method.named_parameters() if p.requires_grad]
        params = dict(method.named_parameters())
        self.shadow = {n: params[n].detach().clone().float() for n in self.names}

    @torch.no_grad()
    def update(self, method: Method, count: int) -> None:
        """The count-th update (optimisation steps done, this one included; resume-safe: the loop's step)."""
        params = dict(method.named_parameters())
        decay = ema_decay_at(self.decay, count, self.warmup)
        torch._foreach_lerp_(
            [self.shadow[n] for n in self.names], [params[n].detach().float() for n in self.names], 1.0 - decay
        )

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.names) - set(state)
        if missing:
            raise TrainingError(f"resume state: EMA misses {sorted(missing)[0]}")
        for n in self.names:
            self.shadow[n].copy_(state[n])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _run_fingerprint(method_name: str, cfg: RunConfig, seed: int, world: int, extra: dict[str, Any]) -> str:
    blob = json.dumps({"method": method_name, "config": cfg.to_dict(), "seed": seed, "world": world, **extra},
                      sort_keys=True, default=str)
    return sha256_bytes(blob.encode())[:16]


def adam_optimizer(
    params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
    decoupled: bool = False,
) -> torch.optim.Optimizer:
    """Adam (AdamW if `decoupled`), with the fused kernel (one call for all tensors) where torch has it.

    Same update as the per-tensor loop; on the embedded default's U-Net (198 tensors) the step costs
    2.1 ms instead of 9.3 ms on one CPU thread (measured 2026-11-30), ~3 % of a training step.
    """
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                for p in params)
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


def amp_enabled(amp: str, device: torch.device, input_kind: str) -> bool:
    """bf16 autocast of the training step: `train.amp` bf16 = on, off = off, auto = on for image networks where
    the device computes bf16 natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX; pdae.precision),
    off for the small MLPs on latents (latent DPM, classifiers), whose steps gain little.

    The loss is reduced in fp32 and the optimiser and EMA keep fp32 weights. On this project's 2-core CPU (AMX)
    a training step of the embedded U-Nets at batch 32 takes 0.83-0.86x the fp32 time (DPM 93 vs 110 ms, PDAE
    112 vs 135 ms, Diff-AE 136 vs 160 ms; measured 2026-12-03)."""
    from pdae import precision

    if amp == "bf16":
        return True
    if amp == "off":
        return False
    return input_kind == "images" and precision.bf16_available(device)


def _make_optimizer(params: list[nn.Parameter], tc: TrainConfig) -> torch.optim.Optimizer:
    return adam_optimizer(params, tc.lr, tuple(tc.betas), tc.weight_decay, decoupled=tc.optimizer == "adamw")


def _log_lines_upto(path: Path, images_seen: int) -> None:
    """Drop log entries written after the resume point (they will be written again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["images_seen"] <= images_seen]
    path.write_text("".join(ln + "\n" for ln in keep))


class NonFiniteLoss(ArithmeticError):
    """The step's loss is not finite; nothing was updated."""

    def __init__(self, value: float) -> None:
        super().__init__(f"non-finite loss {value}")
        self.value = value


@dataclasses.dataclass
class Stepper:
    """What one optimisation step needs: the module to call (`method`, or its DDP / compiled wrapper), the
    method (for the EMA), the optimiser, the EMA, the trainable parameters and the step's settings."""

    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    ema: EMA
    params: list[nn.Parameter]
    use_amp: bool
    grad_clip: float | None
    device: torch.device


def train_step(st: Stepper, x: Tensor, y: Tensor, generator: torch.Generator, lr: float, count: int,
               dist_info: DistInfo | None = None) -> float:
    """One optimisation step of the training loop (also what `pdae bench` times): set the learning rate,
    forward the per-sample loss (bf16 autocast if `use_amp`) and its mean, stop on a non-finite loss before
    changing anything (NonFiniteLoss), backward, clip, Adam, then the `count`-th EMA update.

    -> the loss (mean over ranks under DDP)."""
    for group in st.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(st.device.type, dtype=torch.bfloat16, enabled=st.use_amp):
        loss = st.model(x, y, generator).mean()
    loss_value = _mean_over_ranks(loss.detach().float(), dist_info or DistInfo())
    if not math.isfinite(loss_value):
        raise NonFiniteLoss(loss_value)
    st.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if st.grad_clip is not None:
        nn.utils.clip_grad_norm_(st.params, st.grad_clip)
    st.optimizer.step()
    st.ema.update(st.method, count)
    return loss_value


@dataclasses.dataclass
class TrainResult:
    out_dir: Path
    images_seen: int
    steps: int
    resumed_from: int
    wall_time_s: float


def train(
    method_name: str,
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    dpm_dir: str | Path | None = None,
    encoder_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    resume_dir: str | Path | None = None,
    progress: bool = True,
    stop_after_images: int | None = None,
) -> TrainResult:
    """Train `method_name` under `cfg` and write the final model folder `out_dir`.

    :param stop_after_images: for tests: return (without final artifacts) once this many images were seen.
    """
    from pdae.checkpoint import save_model_folder
    from pdae.data import build_dataset, random_hflip

    out_dir = Path(out_dir)
    resume_dir = Path(resume_dir) if resume_dir else out_dir.with_name(out_dir.name + ".resume")
    tc = cfg.train
    dev = resolve_device(device)
    dist_info = init_distributed(dev)
    if dist_info.world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(dev)
    if tc.batch_size % dist_info.world:
        raise TrainingError(f"train.batch_size {tc.batch_size} is not divisible by {dist_info.world} processes")
    if out_dir.exists():
        raise TrainingError(f"{out_dir}: output folder exists; remove it to train again")

    # Data and method.
    dataset = build_dataset(cfg.data, split="train")
    info = data_info(dataset)
    prior = load_method(dpm_dir, dev) if dpm_dir else None
    encoder = load_method(encoder_dir, dev) if encoder_dir else None
    torch.manual_seed(seed)  # identical initial weights on every rank
    method = build_method(method_name, cfg.nets, cfg.method, cfg.diffusion, info, prior=prior, encoder=encoder)
    hflip = bool(getattr(dataset, "hflip", False)) and method.input_kind == "images"
    if method.input_kind == "latents":
        z = encode_dataset(encoder, dataset, dev)
        method.stats.set(z)
        targets = dataset_targets(dataset, method.method_kwargs.get("targets", "labels"))
        dataset = TensorPairs(method.stats.normalize(z), targets)
    method.to(dev)
    method.train()
    params = method.trainable_parameters()
    if not params:
        raise TrainingError(f"method {method_name} has no trainable parameters")
    optimizer = _make_optimizer(params, tc)
    ema = EMA(method, tc.ema_decay, tc.ema_warmup)
    on_cuda = dev.type == "cuda"
    use_amp = amp_enabled(tc.amp, dev, method.input_kind)
    channels_last = method.input_kind == "images" and (tc.channels_last == "on" or (tc.channels_last == "auto" and on_cuda))
    if channels_last:
        method.to(memory_format=torch.channels_last)
    model: nn.Module = method
    if dist_info.world > 1:
        model = nn.parallel.DistributedDataParallel(
            method, device_ids=[dev.index] if on_cuda else None, broadcast_buffers=False
        )
    if tc.compile:
        model = torch.compile(model)

    stepper = Stepper(model, method, optimizer, ema, params, use_amp, tc.grad_clip, dev)
    generator = torch.Generator(dev).manual_seed(seed * 1000 + dist_info.rank)
    torch.manual_seed(seed * 1000 + dist_info.rank + 1)  # dropout
    fingerprint = _run_fingerprint(method_name, cfg, seed, dist_info.world,  # the resolved precision too: a
                                   {"dpm": str(dpm_dir), "encoder": str(encoder_dir),  # resume never mixes them
                                    "precision": "bf16" if use_amp else "fp32"})

    # Resume.
    images_seen, wall_before, resumed_from = 0, 0.0, 0
    log_acc = (0.0, 0)  # loss sum and count since the last log line
    state_path = resume_dir / STATE_FILE
    if state_path.exists():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state is reported in one line
            raise TrainingError(f"{state_path}: unreadable resume state ({type(exc).__name__}); delete it to restart") from None
        if state.get("fingerprint") != fingerprint:
            raise TrainingError(f"{state_path}: resume state belongs to a different config/seed; delete {resume_dir} to restart")
        method.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        generator.set_state(state["rng"][dist_info.rank]["generator"])
        torch.set_rng_state(state["rng"][dist_info.rank]["torch"])
        if on_cuda and "cuda" in state["rng"][dist_info.rank]:
            torch.cuda.set_rng_state(state["rng"][dist_info.rank]["cuda"], dev)
        images_seen, wall_before = int(state["images_seen"]), float(state["wall_time_s"])
        log_acc = (float(state["log_acc"][0]), int(state["log_acc"][1]))
        resumed_from = images_seen
    if dist_info.main:
        resume_dir.mkdir(parents=True, exist_ok=True)
        _log_lines_upto(resume_dir / LOG_FILE, images_seen)

    local_batch = tc.batch_size // dist_info.world
    total_steps = math.ceil(tc.images / tc.batch_size)
    step = images_seen // tc.batch_size
    source = BatchSource(dataset, tc.num_workers)
    snapshots = sorted(set(tc.snapshot_images))
    t_start = time.perf_counter()
    (log_loss, log_n), log_t, log_img = log_acc, time.perf_counter(), images_seen
    bar = _progress_bar(total_steps, step, method_name, enabled=progress and dist_info.main)

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    def save_resume() -> None:
        rng = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
        if on_cuda:
            rng["cuda"] = torch.cuda.get_rng_state(dev)
        all_rng = _gather_objects(rng, dist_info)
        if dist_info.main:
            state = {
                "fingerprint": fingerprint, "images_seen": images_seen, "wall_time_s": wall(),
                "model": {k: v for k, v in method.state_dict().items() if k in _trainable_state_keys(method)},
                "optimizer": optimizer.state_dict(), "ema": ema.state_dict(), "rng": all_rng,
                "log_acc": [log_loss, log_n],
            }
            _atomic_torch_save(state, state_path)

    def save_snapshot(n_images: int) -> None:
        if not dist_info.main:
            return
        tensors, config = export_method(method, ema.state_dict())
        meta = _metadata(method_name, cfg, seed, n_images, n_images // tc.batch_size, wall(), dist_info, dpm_dir,
                         encoder_dir, "bf16" if use_amp else "fp32")
        target = resume_dir / "snapshots" / f"img{n_images:09d}"
        if not target.exists():
            save_model_folder(target, tensors, config, meta)

    while step < total_steps:
        if stop_after_images is not None and images_seen >= stop_after_images:
            bar.close()
            return TrainResult(out_dir, images_seen, step, resumed_from, wall())
        # One optimisation step on the global batch (this rank's shard).
        idx = global_indices(seed, len(dataset), images_seen, tc.batch_size)
        idx = idx[dist_info.rank * local_batch : (dist_info.rank + 1) * local_batch]
        x, y = source.get(idx)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if hflip:
            x = random_hflip(x, generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = tc.lr * min(1.0, (images_seen + tc.batch_size) / tc.warmup_images) if tc.warmup_images else tc.lr
        try:
            loss_value = train_step(stepper, x, y, generator, lr, step + 1, dist_info)
        except NonFiniteLoss as exc:
            bar.close()
            raise TrainingError(
                f"non-finite loss ({exc.value}) at step {step + 1} ({images_seen} images seen); "
                f"the last good resume state is kept in {resume_dir}"
            ) from None
        step += 1
        images_seen += tc.batch_size
        log_loss += loss_value
        log_n += 1
        bar.update(1)

        # Log, resume state, snapshots.
        if images_seen // tc.log_every_images != (images_seen - tc.batch_size) // tc.log_every_images or step == total_steps:
            now = time.perf_counter()
            record = {
                "step": step, "images_seen": images_seen, "loss": log_loss / log_n, "lr": lr,
                "images_per_s": (images_seen - log_img) / max(now - log_t, 1e-9), "wall_time_s": round(wall(), 3),
            }
            if dist_info.main:
                with open(resume_dir / LOG_FILE, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
            log_loss, log_n, log_t, log_img = 0.0, 0, now, images_seen
        for n_images in snapshots:
            if images_seen - tc.batch_size < n_images <= images_seen:
                save_snapshot(n_images)
        if images_seen // tc.resume_every_images != (images_seen - tc.batch_size) // tc.resume_every_images:
            save_resume()
    bar.close()

    # Final artifact: EMA weights, written once and atomically, then the resume state goes.
    result = TrainResult(out_dir, images_seen, step, resumed_from, wall())
    if dist_info.main:
        tensors, config = export_method(method, ema.state_dict())
        meta = _metadata(method_name, cfg, seed, images_seen, step, result.wall_time_s, dist_info, dpm_dir,
                         encoder_dir, "bf16" if use_amp else "fp32")
        meta["resumed_from_images"] = resumed_from
        staging = out_dir.with_name(f".{out_dir.name}.staging")
        if staging.exists():
            shutil.rmtree(staging)
        save_model_folder(staging, tensors, config, meta)
        (staging / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        shutil.copy2(resume_dir / LOG_FILE, staging / LOG_FILE)
        if (resume_dir / "snapshots").exists():
            shutil.copytree(resume_dir / "snapshots", staging / "snapshots")
        os.replace(staging, out_dir)
        shutil.rmtree(resume_dir, ignore_errors=True)
    _barrier(dist_info)
    return result


def _trainable_state_keys(method: Method) -> set[str]:
    """State-dict keys that training changes (frozen priors are rebuilt from their own folder)."""
    return {n for n, p in method.named_parameters() if p.requires_grad} | {
        n for n, _ in method.named_buffers() if not n.startswith(("estimator.prior.",))
    }


def _metadata(method_name: str, cfg: RunConfig, seed: int, images_seen: int, steps: int, wall_s: float,
              dist_info: DistInfo, dpm_dir: Any, encoder_dir: Any, precision: str = "fp32") -> dict[str, Any]:
    return {
        "method": method_name, "seed": seed, "images_seen": images_seen, "steps": steps,
        "batch_size": cfg.train.batch_size, "wall_time_s": round(wall_s, 3), "world_size": dist_info.world,
        "code_version": code_version(), "created": utc_now(), "torch": torch.__version__,
        "dpm": str(dpm_dir) if dpm_dir else None, "encoder": str(encoder_dir) if encoder_dir else None,
        "data": cfg.data, "precision": precision,
    }


def _mean_over_ranks(value: Tensor, dist_info: DistInfo) -> float:
    if dist_info.world > 1:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        value /= dist_info.world
    return float(value)


def _gather_objects(obj: Any, dist_info: DistInfo) -> list[Any]:
    if dist_info.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist_info.world
    dist.all_gather_object(out, obj)
    return out


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


class _NullBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {desc}", unit="step", file=sys.stderr,
                dynamic_ncols=True, mininterval=2.0)
