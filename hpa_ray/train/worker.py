"""One fold's Ray Train worker (`train_loop_per_worker`): set up the model and its training
method, resume from the last checkpoint, then per epoch train, validate (macro AP over classes,
cells against their weak labels), report with a checkpoint, stop early. Which checkpoint holds the
best weights is Ray Train's to keep (`fit.CHECKPOINTS`); the driver that starts it: `hpa_ray.train.fit`.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpa_ray.core import storage
from hpa_ray.core.layout import Fold
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.methods import build_method, validation_metrics

STATE = "state.pt"  # a checkpoint's one file: weights, optimizer, scheduler, progress
EpochHook = Callable[[int, str], None]  # (epoch, fold_dir), in the rank-0 worker as each epoch starts


def _gather(array: np.ndarray) -> np.ndarray:
    """Concatenate an array over all workers (validation predictions of every shard)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return array
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def _evaluate(model, method, shard, amp: bool) -> dict[str, float]:
    """Validation outputs of this worker's shard, gathered over the workers → metrics."""
    import torch

    model.eval()
    parts: dict[str, list] = {key: [value] for key, value in method.empty_outputs().items()}
    with torch.no_grad():
        for batch in method.batches(shard, train=False):
            with torch.autocast(method.device.type, dtype=torch.bfloat16, enabled=amp):
                for key, value in method.outputs(model, batch).items():
                    parts[key].append(value)
    return validation_metrics({key: _gather(np.concatenate(values)) for key, values in parts.items()}, method.selects)


class _Board:
    """Rank 0's TensorBoard events in fold_dir/tensorboard. Event files grow by appends, which
    object storage cannot do: for a URI they are written locally and uploaded after each epoch."""

    def __init__(self, fold_dir: str):
        from tensorboardX import SummaryWriter

        self.target = Fold(fold_dir).tensorboard
        self.local = tempfile.mkdtemp(prefix="hpa-tensorboard-") if storage.is_uri(fold_dir) else self.target
        self.writer = SummaryWriter(self.local)

    def log(self, metrics: dict) -> None:
        for key, value in metrics.items():
            if key != "epoch" and np.isfinite(value):
                self.writer.add_scalar(key, value, metrics["epoch"])
        self.writer.flush()
        if self.local != self.target:
            storage.upload_dir(self.local, self.target)

    def close(self) -> None:
        self.writer.close()
        if self.local != self.target:
            storage.upload_dir(self.local, self.target)
            shutil.rmtree(self.local, ignore_errors=True)


@dataclass
class _Worker:
    """What one Ray Train worker holds for a fold: config, device, model, optimiser, progress."""

    cfg: TrainConfig
    fold_dir: str
    rank: int
    world: int
    device: object
    amp: bool
    model: object  # what the training steps call (DDP-wrapped and/or compiled)
    bare: object  # the module itself: checkpoints and validation
    method: object
    optimizer: object
    scheduler: object
    state: dict = field(default_factory=lambda: {"epoch": -1, "best_map": -1.0, "since_best": 0})
    resumed_from: int = -1


def _setup_worker(config: dict) -> _Worker:
    import ray.train
    import ray.train.torch
    import torch

    from hpa_ray.train.backbones import normalisation
    from hpa_ray.train.model import build_model

    cfg = TrainConfig.model_validate(config["train"])
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    ctx, device = ray.train.get_context(), _device()
    amp = cfg.mixed_precision is True or (cfg.mixed_precision == "auto" and device.type == "cuda")
    channels_last = cfg.channels_last is True or (cfg.channels_last == "auto" and (amp or device.type == "cpu"))
    model = build_model(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True  # bag models convert the cells they gather
    model = ray.train.torch.prepare_model(model, move_to_device=device)
    bare = model.module if hasattr(model, "module") else model
    if cfg.compile:
        model = torch.compile(model)  # shares bare's parameters; evaluation runs uncompiled
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    mean, std = normalisation(cfg.model, device)
    return _Worker(cfg, config["fold_dir"], ctx.get_world_rank(), ctx.get_world_size(), device, amp, model, bare,
                   build_method(cfg, device, mean, std, channels_last), optimizer,
                   torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs))  # fmt: skip


def _device():
    """The worker's torch device: Ray Train's, except that a GPU Ray assigned but torch cannot
    see (a logical GPU of a local cluster, or a CPU build of torch) leaves the worker on the CPU
    (reported as `gpu_fallback`, which the console says once) instead of failing on `cuda:0`."""
    import ray.train.torch
    import torch

    device = ray.train.torch.get_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        print("warning: this training worker was given a GPU that torch cannot see; training on the CPU",
              file=sys.stderr)  # fmt: skip
        return torch.device("cpu")
    return device


def gpu_fallback(gpu_asked: bool, device) -> float:
    """1.0 when the worker was given a GPU but trains on the CPU (see `_device`), else 0.0."""
    return float(gpu_asked and device.type != "cuda")


def _resume(w: _Worker) -> None:
    """From the last checkpoint, when Ray Train restarted this worker group."""
    import ray.train
    import torch

    if checkpoint := ray.train.get_checkpoint():
        with checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / STATE, map_location=w.device, weights_only=False)
        w.bare.load_state_dict(saved["model"])
        w.optimizer.load_state_dict(saved["optimizer"])
        w.scheduler.load_state_dict(saved["scheduler"])
        w.state = saved["progress"]
        w.resumed_from = w.state["epoch"]


def _train_epoch(w: _Worker, shard, epoch: int) -> dict:
    """One pass over the shard → its mean training loss, items per second (input included)
    and where the epoch's time went: `first_batch_s` (until the first batch came),
    `first_step_s` (the first step, waited for: kernel selection, compilation),
    `input_wait_s` (all waits for a batch, the first included) and `train_pass_s` (the whole pass)."""
    import torch

    w.model.train()
    # The loss stays on the device until the epoch ends: a .item() per step would make the
    # host wait for every step, so the next batch's fetch and copy could not overlap it.
    loss_sum, steps, seen, waited = torch.zeros((), device=w.device), 0, 0, 0.0
    started = mark = time.perf_counter()
    times = {"first_batch_s": float("nan"), "first_step_s": float("nan")}  # an empty shard
    # Augmentation and shuffle draws follow (seed, worker, epoch): a rerun draws the same.
    for batch in w.method.batches(shard, train=True, seed=(w.cfg.seed, w.rank, epoch)):
        waited += time.perf_counter() - mark
        with torch.autocast(w.device.type, dtype=torch.bfloat16, enabled=w.amp):
            loss = w.method.loss(w.model, batch)
        w.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        w.optimizer.step()
        loss_sum += loss.detach()
        if steps == 0:  # waited for once: what the first step costs beyond the others
            times = {"first_batch_s": waited, "first_step_s": _synchronized(w.device) - started - waited}
        steps += 1
        seen += w.method.items(batch)
        mark = time.perf_counter()
    seconds = time.perf_counter() - started
    return {"train_loss": (loss_sum / steps).item() if steps else float("nan"),
            "train_images_per_s": seen / seconds if seconds else 0.0,
            **times, "input_wait_s": waited, "train_pass_s": seconds}  # fmt: skip


def _synchronized(device) -> float:
    """The time once the device has finished what was queued (CUDA runs asynchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _count_since_best(w: _Worker, val_map: float) -> None:
    """Early stopping's count: epochs since val_map last rose."""
    if val_map > w.state["best_map"]:
        w.state.update(best_map=val_map, since_best=0)
    else:
        w.state["since_best"] += 1


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker: config = {"train": TrainConfig dict, "fold": K, "fold_dir": path}."""
    import ray.train

    w = _setup_worker(config)
    _resume(w)
    writer = _Board(w.fold_dir) if w.rank == 0 else None
    for epoch in range(w.state["epoch"] + 1, w.cfg.epochs):
        if w.rank == 0:
            for hook in config.get("epoch_hooks", ()):
                hook(epoch, w.fold_dir)
        epoch_stats = _train_epoch(w, ray.train.get_dataset_shard("train"), epoch)
        w.scheduler.step()
        val = _evaluate(w.bare, w.method, ray.train.get_dataset_shard("val"), w.amp)
        _count_since_best(w, val["val_map"])
        w.state["epoch"] = epoch
        # this worker's rate × workers: the fold's training throughput in cells/s (input included)
        metrics = {"epoch": epoch, **epoch_stats, **val, "best_val_map": w.state["best_map"],
                   "lr": w.scheduler.get_last_lr()[0], "resumed_from_epoch": w.resumed_from,
                   "gpu_fallback": gpu_fallback(config.get("gpu", False), w.device),
                   # this fold ends after this epoch by itself (a search tells ASHA's stops apart)
                   "last_epoch": epoch == w.cfg.epochs - 1 or w.state["since_best"] >= w.cfg.patience,
                   "train_images_per_s": epoch_stats["train_images_per_s"] * w.world}  # fmt: skip
        _report(metrics, w, writer)
        if w.state["since_best"] >= w.cfg.patience:
            break
    if writer is not None:
        writer.close()


def _report(metrics: dict, w: _Worker, writer) -> None:
    import ray.train
    import torch

    if w.rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    writer.log(metrics)
    # the node beside each epoch: where a fold ran, and which node a lost worker was on
    line = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
    storage.append_text(Fold(w.fold_dir).metrics_jsonl, json.dumps(line) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": w.bare.state_dict(), "optimizer": w.optimizer.state_dict(),
                    "scheduler": w.scheduler.state_dict(), "progress": dict(w.state)}, Path(tmp) / STATE)  # fmt: skip
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
