"""One training loop for every method: the DPM, PDAE, Diff-AE, the latent DPM and the classifiers.

The loop only sees the method interface (`loss`, `trainable_parameters`, `components`); what it reads and in
which order is `pdae.batches`, the optimiser, EMA and precision `pdae.optim`, signals, the process group and
the loss meter `pdae.run_control`. Budget in images
seen (the paper's unit), Adam/AdamW, EMA of the trainable parameters (with a warm-up), optional horizontal
flip, bf16 autocast where the hardware has it (`amp_enabled`), channels_last on CUDA, DistributedDataParallel
under `torchrun`, generators seeded per rank from the run seed, a JSONL log and progress
(pdae.progress: a tqdm bar on a terminal, a plain line every minute in a log file).

Resume: every `resume_every_images` the whole training state (weights, EMA, optimizer, RNG states,
images seen) is written atomically to `<out>.resume/state.pt`; rerunning the same command continues from
it, and the result is bitwise equal to an uninterrupted run (CPU). The final model folder (EMA weights)
is written once, at the end, atomically; then the resume directory is removed. The run's files besides its
model folders (output checks, resume state, log, metadata) are `pdae.train_state`. Outputs follow
`pdae.fsutil`: one writer per output (`<out>.lock`), every temporary file in the run's staging folder
`.<out>.pdae-staging` (never in a final folder, even after `kill -9`), nothing replaced or removed that
this program did not write; SIGINT/SIGTERM stop at the next step boundary with a resume state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdae import fsutil
from pdae.batches import (  # noqa: F401 - also importable from here (tests, benchmarks)
    IndexBatches, TensorPairs, batch_loader, data_info, dataset_targets, encode_dataset, epoch_permutation,
    global_indices,
)
from pdae.checkpoint import load_method, save_model_folder
from pdae.config import RunConfig, check_memory
from pdae.data import random_hflip
from pdae.device import resolve_device  # noqa: F401 - one resolver for every command (pdae.bench too)
from pdae.methods import Method, build_method, export_method
from pdae.optim import (  # noqa: F401 - also importable from here (pdae.bench, tests, benchmarks)
    EMA, Stepper, _make_optimizer, adam_optimizer, amp_enabled, channels_last_enabled, ema_decay_at, train_step,
)
from pdae.run_control import (  # noqa: F401 - also importable from here (pdae.cli, tests)
    DistInfo, LossMeter, StopSignals, TrainingError, TrainingInterrupted, _barrier, _gather_objects, init_distributed,
)
from pdae.train_state import (  # the run's files besides its model folders
    LOG_FILE, STATE_FILE, atomic_torch_save, check_output_paths, log_lines_upto, model_metadata, read_resume_state,
    run_fingerprint, trainable_state_keys,
)


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

    Before any work, every config value (`pdae.config.check_run_config`) and the paths are checked: `out_dir`
    must not exist; the resume folder (default `<out>.resume`) must be missing, empty or one this program
    wrote, apart from `out_dir` and on its file system. The run then holds `<out>.lock` (one writer per
    output; a second run is refused at once), writes every temporary file in `.<out>.pdae-staging` (removed
    on every exit) and stops on SIGINT/SIGTERM at the next step boundary with a resume state
    (TrainingInterrupted).

    :param stop_after_images: for tests: return (without final artifacts) once this many images were seen.
    """
    from pdae.config import check_run_config

    out_dir = Path(out_dir)
    resume_dir = Path(resume_dir) if resume_dir else out_dir.with_name(out_dir.name + ".resume")
    check_run_config(method_name, cfg, dpm_dir, encoder_dir, check_inputs=True)
    main = int(os.environ.get("RANK", "0")) == 0
    with contextlib.ExitStack() as stack:
        staging = None
        if main:
            check_output_paths(out_dir, resume_dir)
            stack.enter_context(fsutil.OutputLock(out_dir))
            if resume_dir != out_dir.with_name(out_dir.name + ".resume"):
                stack.enter_context(fsutil.OutputLock(resume_dir, "--resume-dir"))
            check_output_paths(out_dir, resume_dir)  # again, now that no other run can change them
            staging = stack.enter_context(fsutil.RunStaging(out_dir))
            fsutil.remove_legacy_temps(resume_dir)
        stop = stack.enter_context(StopSignals())
        try:
            return _train_run(staging, stop, method_name, cfg, out_dir, dpm_dir=dpm_dir, encoder_dir=encoder_dir,
                              seed=seed, device=device, resume_dir=resume_dir, progress=progress,
                              stop_after_images=stop_after_images)
        except MemoryError:
            raise TrainingError(f"out of memory while training {method_name} (config.nets sizes, train.batch_size); "
                                f"the last resume state, if any, is kept in {resume_dir}") from None


def _train_run(
    staging: fsutil.RunStaging | None,
    stop: StopSignals,
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
    """`train` once its paths are checked and locked: temporary files in `staging`, signals through `stop`.

    Build the run, continue from its resume state if there is one, step until the budget is spent (or a
    signal / `stop_after_images` ends it), export the EMA weights."""
    out_dir = Path(out_dir)
    resume_dir = Path(resume_dir) if resume_dir else out_dir.with_name(out_dir.name + ".resume")
    run = _Run.build(staging, method_name, cfg, out_dir, resume_dir, dpm_dir=dpm_dir, encoder_dir=encoder_dir,
                     seed=seed, device=device)
    run.resume()
    if not run.steps(stop, progress, stop_after_images):
        return run.result()
    return run.export()


def _training_inputs(method: Method, dataset: Any, encoder: Method | None, dev: torch.device) -> Any:
    """What the method trains on: the dataset itself, or for methods on latents (latent DPM, classifiers) the
    encoder's z normalised with statistics set from them (`method.stats`, docs/protocol.md §1.8) paired with
    the dataset's labels or attributes (`method.targets`)."""
    if method.input_kind != "latents":
        return dataset
    z = encode_dataset(encoder, dataset, dev)
    method.stats.set(z)
    targets = dataset_targets(dataset, method.method_kwargs.get("targets", "labels"))
    return TensorPairs(method.stats.normalize(z), targets)


@dataclasses.dataclass
class _Run:
    """One training run: what is trained (`stepper`), on what (`dataset`), and its bookkeeping — counters, the
    resume state in `resume_dir`, the JSONL log, snapshots and the final export into `out_dir`."""

    method_name: str
    cfg: RunConfig
    out_dir: Path
    resume_dir: Path
    staging: fsutil.RunStaging | None
    dpm_dir: str | Path | None
    encoder_dir: str | Path | None
    seed: int
    dev: torch.device
    dist_info: DistInfo
    dataset: Any
    hflip: bool
    channels_last: bool
    stepper: Stepper
    generator: torch.Generator
    fingerprint: str
    images_seen: int = 0
    step: int = 0
    resumed_from: int = 0
    wall_before: float = 0.0
    log_acc: tuple[float, int] = (0.0, 0)  # loss sum and count since the last log line
    t_start: float = dataclasses.field(default_factory=time.perf_counter)
    meter: LossMeter | None = None
    bar: Any = None

    @classmethod
    def build(cls, staging: fsutil.RunStaging | None, method_name: str, cfg: RunConfig, out_dir: Path,
              resume_dir: Path, *, dpm_dir: str | Path | None, encoder_dir: str | Path | None, seed: int,
              device: str) -> _Run:
        """Device and process group, data, the method (seeded: identical initial weights on every rank), the
        optimiser, EMA, precision, DDP / compile wrappers and the run's generator; nothing written yet."""
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
        from pdae.data import build_dataset

        dataset = build_dataset(cfg.data, split="train")
        info = data_info(dataset)
        if tc.batch_size > len(dataset):
            raise TrainingError(f"config.train.batch_size: {tc.batch_size} is larger than the training set "
                                f"({len(dataset)} images)")
        prior = load_method(dpm_dir, dev) if dpm_dir else None
        encoder = load_method(encoder_dir, dev) if encoder_dir else None
        check_memory(method_name, cfg, info, prior, encoder, dev)
        torch.manual_seed(seed)  # identical initial weights on every rank
        method = build_method(method_name, cfg.nets, cfg.method, cfg.diffusion, info, prior=prior, encoder=encoder)
        hflip = bool(getattr(dataset, "hflip", False)) and method.input_kind == "images"
        dataset = _training_inputs(method, dataset, encoder, dev)
        method.to(dev)
        method.train()
        params = method.trainable_parameters()
        if not params:
            raise TrainingError(f"method {method_name} has no trainable parameters")
        use_amp = amp_enabled(tc.amp, dev, method.input_kind)
        channels_last = channels_last_enabled(tc.channels_last, dev, method.input_kind, use_amp,
                                              info["image_size"])
        if channels_last:
            method.to(memory_format=torch.channels_last)
        model: nn.Module = method
        if dist_info.world > 1:
            model = nn.parallel.DistributedDataParallel(
                method, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False
            )
        if tc.compile:
            model = torch.compile(model)
        stepper = Stepper(model, method, _make_optimizer(params, tc), EMA(method, tc.ema_decay, tc.ema_warmup),
                          params, use_amp, tc.grad_clip, dev)
        generator = torch.Generator(dev).manual_seed(seed * 1000 + dist_info.rank)
        torch.manual_seed(seed * 1000 + dist_info.rank + 1)  # dropout
        fingerprint = run_fingerprint(method_name, cfg, seed, dist_info.world,  # the resolved precision too: a
                                      {"dpm": str(dpm_dir), "encoder": str(encoder_dir),  # resume never mixes them
                                       "precision": "bf16" if use_amp else "fp32", "channels_last": channels_last})
        return cls(method_name, cfg, out_dir, resume_dir, staging, dpm_dir, encoder_dir, seed, dev, dist_info,
                   dataset, hflip, channels_last, stepper, generator, fingerprint)

    # --- the resume state -------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.resume_dir / STATE_FILE

    def resume(self) -> None:
        """Continue from `<resume_dir>/state.pt` if it exists (same config, seed, world size and precision), then
        make the resume folder and drop log lines written after the resume point."""
        st = self.stepper
        if self.state_path.exists():
            state = read_resume_state(self.state_path, self.fingerprint, self.resume_dir)
            rng = state["rng"][self.dist_info.rank]
            st.method.load_state_dict(state["model"], strict=False)
            st.optimizer.load_state_dict(state["optimizer"])
            st.ema.load_state_dict(state["ema"])
            self.generator.set_state(rng["generator"])
            torch.set_rng_state(rng["torch"])
            if self.dev.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.dev)
            self.images_seen, self.wall_before = int(state["images_seen"]), float(state["wall_time_s"])
            self.log_acc = (float(state["log_acc"][0]), int(state["log_acc"][1]))
            self.resumed_from = self.images_seen
        if self.dist_info.main:
            with fsutil.writing(self.resume_dir):
                self.resume_dir.mkdir(parents=True, exist_ok=True)
            log_lines_upto(self.resume_dir / LOG_FILE, self.images_seen, self.staging)

    def save_resume(self) -> None:
        """The whole training state, every rank's RNG states gathered, written atomically by the main rank."""
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.dev)
        all_rng = _gather_objects(rng, self.dist_info)
        if self.dist_info.main:
            st = self.stepper
            state = {
                "fingerprint": self.fingerprint, "images_seen": self.images_seen, "wall_time_s": self.wall(),
                "model": {k: v for k, v in st.method.state_dict().items() if k in trainable_state_keys(st.method)},
                "optimizer": st.optimizer.state_dict(), "ema": st.ema.state_dict(), "rng": all_rng,
                "log_acc": self.meter.state(),
            }
            atomic_torch_save(state, self.state_path, self.staging)

    # --- the loop -----------------------------------------------------------------------------------------------
    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def steps(self, stop: StopSignals, progress: bool, stop_after_images: int | None) -> bool:
        """Optimisation steps until the budget `train.images` is spent (-> True), or `stop_after_images` images
        were seen (-> False, nothing exported); a signal saves the resume state and raises TrainingInterrupted.
        Logs every `log_every_images`, snapshots at `snapshot_images`, resume state every `resume_every_images`."""
        tc = self.cfg.train
        total_steps = math.ceil(tc.images / tc.batch_size)
        self.step = self.images_seen // tc.batch_size
        batches = IndexBatches(self.seed, len(self.dataset), self.images_seen, tc.batch_size, total_steps - self.step,
                               self.dist_info.rank, self.dist_info.world)
        loader = iter(batch_loader(self.dataset, batches, tc.num_workers, pin_memory=self.dev.type == "cuda"))
        snapshots = sorted(set(tc.snapshot_images))
        self.t_start = time.perf_counter()
        self.meter = LossMeter(self.dev, *self.log_acc)
        log_t, log_img = time.perf_counter(), self.images_seen
        self.bar = _progress_bar(total_steps, self.step, self.method_name, progress and self.dist_info.main,
                                 tc.batch_size)
        while self.step < total_steps:
            if stop_after_images is not None and self.images_seen >= stop_after_images:
                self.bar.close()
                return False
            signum = stop.pending(self.dist_info, self.step, tc.log_every_images // tc.batch_size)
            if signum:  # SIGINT/SIGTERM: stop at this step boundary with a resume state
                self.ensure_finite()
                self.save_resume()
                self.bar.close()
                raise TrainingInterrupted(
                    f"stopped by {signal.Signals(signum).name} after step {self.step} ({self.images_seen} images "
                    f"seen); the resume state is saved in {self.resume_dir}: rerun the same command to continue",
                    signum)
            lr = self.one_step(next(loader))
            if _crossed(self.images_seen, tc.batch_size, tc.log_every_images) or self.step == total_steps:
                self.ensure_finite()
                now = time.perf_counter()
                self.write_log(lr, (self.images_seen - log_img) / max(now - log_t, 1e-9))
                log_t, log_img = now, self.images_seen
            for n_images in snapshots:
                if self.images_seen - tc.batch_size < n_images <= self.images_seen:
                    self.ensure_finite()
                    self.save_snapshot(n_images)
            if _crossed(self.images_seen, tc.batch_size, tc.resume_every_images):
                self.ensure_finite()
                self.save_resume()
        self.ensure_finite()
        self.bar.close()
        return True

    def one_step(self, batch: tuple[Tensor, Tensor]) -> float:
        """One optimisation step on the global batch (this rank's shard): device copy, flip, memory format,
        warm-up learning rate, `train_step`. -> the learning rate used."""
        tc = self.cfg.train
        x, y = batch
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        if self.hflip:
            x = random_hflip(x, self.generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = tc.lr * min(1.0, (self.images_seen + tc.batch_size) / tc.warmup_images) if tc.warmup_images else tc.lr
        self.meter.add(train_step(self.stepper, x, y, self.generator, lr, self.step + 1), self.step + 1)
        self.step += 1
        self.images_seen += tc.batch_size
        self.bar.update(1)
        return lr

    def ensure_finite(self) -> None:
        """Stop (TrainingError) if a step since the last check had a non-finite loss: nothing is saved after it."""
        bad = self.meter.first_nonfinite(self.dist_info)
        if bad:
            self.bar.close()
            kept = (f"the last good resume state is kept in {self.resume_dir}" if self.state_path.exists()
                    else "no resume state was written before it")
            raise TrainingError(f"non-finite loss at step {bad} ({(bad - 1) * self.cfg.train.batch_size} images seen "
                                f"before it); {kept}")

    def write_log(self, lr: float, images_per_s: float) -> None:
        """One JSONL line (the mean loss since the last line, over ranks) and the progress bar's postfix."""
        record = {
            "step": self.step, "images_seen": self.images_seen, "loss": self.meter.mean(self.dist_info), "lr": lr,
            "images_per_s": images_per_s, "wall_time_s": round(self.wall(), 3),
        }
        if self.dist_info.main:
            with open(self.resume_dir / LOG_FILE, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
        self.meter.reset()

    # --- exports ------------------------------------------------------------------------------------------------
    def _metadata(self, images_seen: int, wall_s: float) -> dict[str, Any]:
        return model_metadata(self.method_name, self.cfg, self.seed, images_seen,
                              images_seen // self.cfg.train.batch_size, wall_s, self.dist_info, self.dpm_dir,
                              self.encoder_dir, "bf16" if self.stepper.use_amp else "fp32")

    def save_snapshot(self, n_images: int) -> None:
        """The EMA weights after `n_images` images as a model folder under `<resume_dir>/snapshots/` (built in
        the staging folder, renamed into place when complete)."""
        if not self.dist_info.main:
            return
        tensors, config = export_method(self.stepper.method, self.stepper.ema.state_dict())
        target = self.resume_dir / "snapshots" / f"img{n_images:09d}"
        if not target.exists():
            staging = self.staging.new_path(target.name) if self.staging else None
            save_model_folder(target, tensors, config, self._metadata(n_images, self.wall()), staging=staging)

    def result(self) -> TrainResult:
        return TrainResult(self.out_dir, self.images_seen, self.step, self.resumed_from, self.wall())

    def export(self) -> TrainResult:
        """Final artifact: EMA weights, config, log and snapshots, built complete in the staging folder and
        swapped into `out_dir` at once; then the resume state goes."""
        result = self.result()
        if self.dist_info.main:
            tensors, config = export_method(self.stepper.method, self.stepper.ema.state_dict())
            meta = self._metadata(self.images_seen, result.wall_time_s)
            meta["steps"] = self.step
            meta["resumed_from_images"] = self.resumed_from
            staging, out_dir = self.staging, self.out_dir
            build = staging.new_path(out_dir.name) if staging else out_dir.with_name(f".{out_dir.name}.staging")
            extra = {"train_config.json": (json.dumps(self.cfg.to_dict(), indent=2, sort_keys=True) + "\n").encode(),
                     LOG_FILE: (self.resume_dir / LOG_FILE).read_bytes()}
            save_model_folder(build, tensors, config, meta, extra_files=extra,
                              staging=staging.new_path("model") if staging else None)
            snaps = sorted(p for p in (self.resume_dir / "snapshots").glob("img*")
                           if fsutil.SNAPSHOT_NAME.fullmatch(p.name))
            with fsutil.writing(out_dir / "snapshots", cleanup=[build]):
                for snap in snaps:  # complete folders only: each was renamed into place when written
                    shutil.copytree(snap, build / "snapshots" / snap.name)
                fsutil.swap_in(build, out_dir)
            shutil.rmtree(self.resume_dir, ignore_errors=True)
        _barrier(self.dist_info)
        return result


def _crossed(images_seen: int, batch_size: int, every: int) -> bool:
    """Whether the step that just ended (batch_size images, up to images_seen) crossed a multiple of `every`."""
    return images_seen // every != (images_seen - batch_size) // every


def _progress_bar(total: int, initial: int, desc: str, enabled: bool, batch_size: int) -> Any:
    """Steps and images seen: a tqdm bar on a terminal, a plain line every minute in a log (pdae.progress)."""
    from pdae.progress import progress_bar

    return progress_bar(total, f"train {desc}", "steps", initial=initial, per_unit=(batch_size, "images"),
                        enabled=enabled)
