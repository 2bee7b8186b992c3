"""Weak-label experiments: which crop size, backbone and training method see the classes.

    python bench/weak_labels.py DATA.npz [DATA2.npz ...] --variants cell,oracle,bag [--model small]
        [--crop 128] [--json out.json] [--set KEY=VALUE ...] [--score fusion=cell fusion=product,border_weight=0.5 ...]

DATA comes from `bench/weak_labels_data.py` (the demo's synthetic train/test sets, segmented,
cells matched to their true cells). Each variant trains one model in-process (one fold: every
training image; the library's models, losses and bag assembly, plain PyTorch on the CPU threads)
and scores the test set two ways:
- `cls_ap`: classification only, macro AP over the test cells that match a true cell, against
  the true cell labels (what the classifier can be blamed for);
- `mAP`: the task's metric (`hpa_ray.evaluate`) of a submission of every segmented test cell.
Variants: `cell` (crops with their image's labels), `oracle` (crops with their matched true
cell's labels: the ceiling), `bag` (TrainConfig method bag), `bag_oracle` (bag model, cell head
trained on true labels). Each model is scored under every `--score` set of predict options
(`fusion`, `border_weight`, `negative`, …), applied as predict applies them.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from hpa_ray.core.config import load_config
from hpa_ray.core.metrics import per_class_ap
from hpa_ray.evaluate.score import evaluate
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.scoring import cell_scores
from hpa_ray.predict.submission import prediction_string
from hpa_ray.train.backbones import normalisation, plain_cnn, register_backbone
from hpa_ray.train.bags import sample_bags
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.data import flip_batch, normalise, resize_crops
from hpa_ray.train.model import bag_loss, build_model

# Candidates measured here only (the registry takes backbones from any module).
register_backbone("small-lite", crop_size=128)(lambda pretrained: plain_cnn((16, 32, 64, 128, 192), repeat=False))
register_backbone("small-wide", crop_size=128)(lambda pretrained: plain_cnn((24, 48, 96, 160)))

SIX = (2, 4, 9, 11, 12, 15)  # the classes the demo scored ~0 on (issue 16)


def _prep(crops: np.ndarray, size: int) -> np.ndarray:
    return crops if crops.shape[-1] == size else resize_crops(crops, size)


def _tensor(crops: np.ndarray, mean, std) -> torch.Tensor:
    return normalise(torch.from_numpy(np.ascontiguousarray(crops)), mean, std)


def train_cells(cfg: TrainConfig, crops, targets, rng) -> torch.nn.Module:
    mean, std = normalisation(cfg.model)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    y = torch.from_numpy(targets.astype(np.float32))
    for _ in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(crops))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            x = _tensor(flip_batch(crops[idx], rng.random((len(idx), 3)) < 0.5), mean, std)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.mixed_precision is True):
                logits = model(x.contiguous(memory_format=torch.channels_last)).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def train_bags(cfg: TrainConfig, crops, image_of, labels, rng, cell_targets=None) -> torch.nn.Module:
    mean, std = normalisation(cfg.model)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    images = np.unique(image_of)
    members = [np.flatnonzero(image_of == i) for i in images]
    per_image = np.stack([labels[m[0]] for m in members]).astype(np.float32)
    bags_per_batch = max(1, cfg.batch_size // cfg.bag_size)
    for _ in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(images))
        for start in range(0, len(images), bags_per_batch):
            chosen = order[start : start + bags_per_batch]
            index, mask = sample_bags([members[j] for j in chosen], cfg.bag_size, rng)
            flat = crops[np.where(mask, index, 0).ravel()]
            flat = flip_batch(flat, rng.random((len(flat), 3)) < 0.5)
            x = _tensor(flat, mean, std).view(*index.shape, *flat.shape[1:])
            m = torch.from_numpy(mask)
            y = torch.from_numpy(per_image[chosen])
            cell_logits, image_logits = model(x, m)
            if cell_targets is None:
                loss = bag_loss(cell_logits, image_logits, m, y, cfg.cell_loss_weight)
            else:  # oracle: the cell head learns the true labels
                t = torch.from_numpy(cell_targets[np.where(mask, index, 0)].astype(np.float32))
                bce = torch.nn.functional.binary_cross_entropy_with_logits
                loss = bce(image_logits, y) + bce(cell_logits[m], t[m])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def predict(model, cfg: TrainConfig, crops, image_of) -> tuple[np.ndarray, np.ndarray | None]:
    """→ (N, 19) cell probabilities, and (N, 19) their image's probabilities for bag models."""
    mean, std = normalisation(cfg.model)
    cell = np.zeros((len(crops), 19), np.float32)
    image = np.zeros_like(cell) if cfg.method == "bag" else None
    with torch.inference_mode():
        if cfg.method == "cell":
            for i in range(0, len(crops), 256):
                cell[i : i + 256] = torch.sigmoid(model(_tensor(crops[i : i + 256], mean, std))).numpy()
            return cell, None
        for img in np.unique(image_of):
            idx = np.flatnonzero(image_of == img)
            x = _tensor(crops[idx], mean, std)[None]
            cl, il = model(x, torch.ones(1, len(idx), dtype=torch.bool))
            cell[idx] = torch.sigmoid(cl[0]).numpy()
            image[idx] = torch.sigmoid(il[0]).numpy()
    return cell, image


def score(data: dict, probs: np.ndarray) -> dict:
    matched = data["test_matched"]
    true = data["test_true"][matched]
    ap = per_class_ap(true, probs[matched])
    rows = []
    for k, image_id in enumerate(data["test_ids"]):
        idx = np.flatnonzero(data["test_image"] == k)
        masks = list(data["test_mask_rle"][idx])
        rows.append({"ID": image_id, "ImageWidth": 2048, "ImageHeight": 2048,
                     "PredictionString": prediction_string(masks, probs[idx], 0.0, 19)})  # fmt: skip
    truth = pd.DataFrame(json.loads(str(data["test_truth"])))
    scores = evaluate(pd.DataFrame(rows), truth)
    return {"cls_ap": float(np.nanmean(ap)), "mAP": scores["mAP"],
            "cls_ap_six": [None if np.isnan(ap[c]) else round(float(ap[c]), 3) for c in SIX],
            "map_per_class": scores["per_class_ap"]}  # fmt: skip


def run_variant(name: str, data: dict, train: TrainConfig, preds: dict[str, PredictConfig], size: int,
                seed: int) -> list[dict]:  # fmt: skip
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    crops = _prep(data["train_crop"], size)
    test = _prep(data["test_crop"], size)
    start = time.perf_counter()
    if name in ("cell", "oracle"):
        cfg = train.model_copy(update={"method": "cell"})
        keep = data["train_matched"] if name == "oracle" else np.ones(len(crops), bool)
        targets = data["train_true" if name == "oracle" else "train_weak"]
        model = train_cells(cfg, crops[keep], targets[keep], rng)
    else:
        cfg = train.model_copy(update={"method": "bag"})
        oracle = data["train_true"] if name == "bag_oracle" else None
        model = train_bags(cfg, crops, data["train_image"], data["train_weak"], rng, oracle)
    seconds = time.perf_counter() - start
    cell, image = predict(model, cfg, test, data["test_image"])
    out = []
    for label, pred in preds.items():
        probs = cell_scores(cell, image, data["test_touches_border"], data["test_area"], pred, data["test_image"])
        out.append({"variant": name, "scoring": label, "train_s": round(seconds, 1), **score(data, probs)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--variants", default="cell,oracle")
    parser.add_argument("--crop", type=int, default=128, help="crops are resized to this side")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per data set")
    parser.add_argument(
        "--score",
        nargs="*",
        default=["fusion=cell"],
        help="predict settings to score each model with, each KEY=VALUE[,KEY=VALUE]",
    )
    parser.add_argument("--json")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        help="TrainConfig KEY=VALUE, or predict.KEY=VALUE for PredictConfig",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    train = load_config(TrainConfig, None, ["model=small", "epochs=20", "batch_size=32", "lr=0.003", *args.overrides])
    preds = {label: load_config(PredictConfig, None, label.split(",")) for label in args.score}
    results = []
    for path in args.data:
        data = dict(np.load(path, allow_pickle=True))
        for variant in args.variants.split(","):
            for seed in range(args.seeds):
                for r in run_variant(variant, data, train, preds, args.crop, seed):
                    results.append({"data": path, "seed": seed, **r})
                    print(json.dumps({k: v for k, v in results[-1].items() if k != "map_per_class"}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"train": train.model_dump(), "crop": args.crop, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
