"""Training methods inside a Ray Train worker: how batches come, the loss, the validation outputs.

`cell`: each cell's crop with its image's (weak) labels. `bag`: an image's cells together
(`hpa_ray.train.model.BagClassifier`), bags drawn anew each epoch in the batch collation. Both report
the same validation metrics: `val_cell_map` (cell predictions against their image's labels),
`val_image_map` (image predictions against the image labels: exact, the labels are the image's),
and `val_map`, the one early stopping and ASHA follow: cell for `cell`, image for `bag`.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from hpa_ray.core.metrics import max_by_image, mean_ap, per_class_ap
from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.train.bags import collate_bags
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.data import CellCollate, normalise
from hpa_ray.train.model import bag_loss


class CellMethod:
    selects = "cell"  # the validation AP that val_map is

    def __init__(self, cfg: TrainConfig, device, mean, std, channels_last: bool):
        self.cfg, self.device, self.mean, self.std, self.channels_last = cfg, device, mean, std, channels_last

    def batches(self, shard, train: bool, seed: tuple[int, ...] | None = None):
        """seed: (seed, worker, epoch) for the augmentation and shuffle draws; None: unseeded."""
        cfg = self.cfg
        # Compiled: a last, smaller batch would compile the model a second time.
        # The worker's own device, not Ray's "auto" (cuda:0 wherever a GPU was assigned, even one
        # torch cannot see: see hpa_ray.train.worker._device).
        return shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=train and cfg.compile, device=self.device,
                                        collate_fn=CellCollate(cfg.image_size, train and cfg.augment, seed),
                                        local_shuffle_buffer_size=_shuffle(cfg.shuffle_buffer, train),
                                        local_shuffle_seed=_int_seed(seed))  # fmt: skip

    def _inputs(self, batch):
        import torch

        x = normalise(batch["crop"].to(self.device, non_blocking=True), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def loss(self, model, batch):
        import torch

        labels = batch["labels"].to(self.device, non_blocking=True)
        return torch.nn.functional.binary_cross_entropy_with_logits(model(self._inputs(batch)).float(), labels)

    def outputs(self, model, batch) -> dict[str, np.ndarray]:
        """Validation: per cell, its probabilities, its image's labels and its image."""
        import torch

        logits = model(self._inputs(batch)).float()
        labels = batch["labels"].to(self.device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        # The batches come already on the worker's device (`batches`): every array goes back to the host.
        return {"loss": np.array([loss.item()]), "cell": torch.sigmoid(logits).cpu().numpy(),
                "cell_labels": labels.cpu().numpy(), "image_of": batch["image"].cpu().numpy()}  # fmt: skip

    def items(self, batch) -> int:
        return len(batch["crop"])

    def empty_outputs(self) -> dict[str, np.ndarray]:
        empty = np.zeros((0, NUM_CLASSES), np.float32)
        return {"loss": np.zeros(0), "cell": empty, "cell_labels": empty, "image_of": np.zeros(0, np.int64)}


class BagMethod(CellMethod):
    selects = "image"

    def batches(self, shard, train: bool, seed: tuple[int, ...] | None = None):
        cfg = self.cfg
        collate = partial(collate_bags, bag_size=cfg.bag_size if train else None, augment=train and cfg.augment,
                          image_size=cfg.image_size, rng=np.random.default_rng(seed))  # fmt: skip
        images = _shuffle(cfg.shuffle_buffer // 16, train)  # the buffer holds images here (~16 cells each)
        return shard.iter_torch_batches(batch_size=max(1, cfg.batch_size // cfg.bag_size), collate_fn=collate,
                                        device=self.device,
                                        drop_last=train and cfg.compile, local_shuffle_buffer_size=images,
                                        local_shuffle_seed=_int_seed(seed))  # fmt: skip

    def _bag(self, batch):
        import torch

        x = normalise(batch["crops"].to(self.device, non_blocking=True), self.mean, self.std)
        mask = batch["mask"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        return x, mask, labels, torch

    def loss(self, model, batch):
        x, mask, labels, _ = self._bag(batch)
        cell_logits, image_logits = model(x, mask)
        return bag_loss(cell_logits, image_logits, mask, labels, self.cfg.cell_loss_weight)

    def outputs(self, model, batch) -> dict[str, np.ndarray]:
        """Validation: per real cell, cell × image probabilities (predict's default fusion), its
        image's labels and its image; per image, the image probabilities and labels."""
        x, mask, labels, torch = self._bag(batch)
        cell_logits, image_logits = model(x, mask)
        loss = bag_loss(cell_logits, image_logits, mask, labels, self.cfg.cell_loss_weight)
        image = torch.sigmoid(image_logits.float())
        cell = (torch.sigmoid(cell_logits.float()) * image.unsqueeze(1))[mask]
        per_cell = labels.unsqueeze(1).expand(*mask.shape, labels.shape[-1])[mask]
        return {"loss": np.array([loss.item()]), "cell": cell.cpu().numpy(), "cell_labels": per_cell.cpu().numpy(),
                "image": image.cpu().numpy(), "image_labels": labels.cpu().numpy()}  # fmt: skip

    def items(self, batch) -> int:
        return int(batch["mask"].sum())

    def empty_outputs(self) -> dict[str, np.ndarray]:
        empty = np.zeros((0, NUM_CLASSES), np.float32)
        return {"loss": np.zeros(0), "cell": empty, "cell_labels": empty, "image": empty, "image_labels": empty}


METHODS = {"cell": CellMethod, "bag": BagMethod}


def _int_seed(seed: tuple[int, ...] | None) -> int | None:
    return None if seed is None else int(np.random.default_rng(seed).integers(2**31))


def _shuffle(buffer: int, train: bool) -> int | None:
    """Training rows come in a random order each epoch: Ray Data keeps the files' order (an
    image's cells together), and batches of few images train much worse (docs/lab/quality.md)."""
    return buffer if train and buffer > 0 else None


def build_method(cfg: TrainConfig, device, mean, std, channels_last: bool):
    return METHODS[cfg.method](cfg, device, mean, std, channels_last)


def _image_level(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """→ (image scores, image labels): the image head's, or (cell models) the max over each image's cells."""
    if "image" in out:
        return out["image"], out["image_labels"]
    scores, rows = max_by_image(out["cell"].astype(np.float32), out["image_of"])
    labels = np.zeros_like(scores)
    labels[rows] = out["cell_labels"]
    return scores, labels


def validation_metrics(out: dict[str, np.ndarray], selects: str) -> dict[str, float]:
    """Concatenated validation outputs (every worker's) → val_loss, val_cell_map, val_image_map,
    val_map (the selected one) and ap_0 … ap_18 of the selected level."""
    cell_ap = per_class_ap(out["cell_labels"], out["cell"])
    image_ap = per_class_ap(*_image_level(out)[::-1])

    chosen = image_ap if selects == "image" else cell_ap
    return {"val_loss": float(np.mean(out["loss"])) if len(out["loss"]) else float("nan"),
            "val_map": mean_ap(chosen), "val_cell_map": mean_ap(cell_ap), "val_image_map": mean_ap(image_ap),
            **{f"ap_{c}": float(v) for c, v in enumerate(chosen)}}  # fmt: skip
