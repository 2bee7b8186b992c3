"""The train stage's configuration (conf/train.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hpa_ray.core.config import Section, Text


class TrainConfig(Section):
    plugins: list[str] = []  # modules imported first, in every process: they may register backbones
    model: str = (
        "efficientnet-b2"  # a backbone of hpa_ray.train.backbones: efficientnet-b2, timm-efficientnet_b2, small, tiny
    )
    method: Literal["cell", "bag"] = "cell"  # cell: crops with their image's labels; bag: an image's cells together
    bag_size: int = Field(16, ge=1)  # bag: most cells per training bag (sampled anew each epoch)
    pooling: Literal["attention", "lse", "max", "mean"] = "attention"  # bag: image logits from the bag's cells
    cell_loss_weight: float = Field(0.1, ge=0)  # bag: loss = image BCE + this × cell BCE
    lse_r: float = Field(5.0, gt=0)  # bag, pooling lse: sharpness (large: max, small: mean)
    pretrained: Text | None = None  # null (random), "imagenet" (download) or a local weights file
    image_size: int | None = Field(None, ge=8)  # crops are resized to this; null: as cut (260)
    batch_size: int = Field(32, ge=1)  # per worker
    epochs: int = Field(10, ge=1)  # most epochs (early stopping may end sooner)
    lr: float = Field(3e-4, gt=0)  # Adam learning rate, annealed by a cosine schedule
    weight_decay: float = Field(0.0, ge=0)  # Adam weight decay
    patience: int = Field(3, ge=1)  # epochs without a better val_map before stopping
    augment: bool = True  # transpose, horizontal and vertical flips, each p=0.5
    shuffle_buffer: int = Field(2048, ge=0)  # training cells mixed in a random order each epoch (0: file order)
    cache_data: bool | Literal["auto"] = "auto"  # fold's crops kept in the object store; auto: if all fit in 1/4
    num_workers: int = Field(1, ge=1)  # Ray Train workers per fold (data-parallel)
    use_gpu: bool | Literal["auto"] = "auto"  # auto: when the cluster has GPUs
    cpus_per_worker: float = Field(1.0, gt=0)  # CPUs per Ray Train worker
    gpus_per_worker: float = Field(1.0, ge=0)  # GPUs per worker when use_gpu
    mixed_precision: bool | Literal["auto"] = "auto"  # bf16 backbone (fp32 heads); auto: on CUDA
    channels_last: bool | Literal["auto"] = "auto"  # channels-last memory format; auto: on (CPU and GPU: faster)
    compile: bool = False  # torch.compile the model (GPU: faster steps after a first slow one)
    threads_per_worker: int = Field(1, ge=1)  # torch CPU threads per worker (one per CPU)
    seed: int = 0  # model initialisation and data order
    max_failures: int = Field(2, ge=0)  # worker-group restarts (from the last checkpoint)
    storage_path: Text | None = None  # Ray Train/Tune storage; null: RUN_DIR/ray_results

    @model_validator(mode="before")
    @classmethod
    def _gone_keys(cls, data):
        """Fold configs saved before 2026-11-28 carry `fail_at_epoch: null` (a test hook, now
        `fit_fold(epoch_hooks=…)`): accepted and dropped when null."""
        if isinstance(data, dict) and data.get("fail_at_epoch", 0) is None:
            data = {k: v for k, v in data.items() if k != "fail_at_epoch"}
        return data

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        from hpa_ray.core.plugins import import_plugins
        from hpa_ray.train.backbones import backbone_names

        import_plugins(info.data.get("plugins", []))
        if name not in backbone_names():
            raise ValueError(f"unknown model {name!r}; registered: {', '.join(backbone_names())}")
        return name
