"""Typed, validated configuration: one section per stage, loaded from conf/*.yaml.

A wrong key or value is a ConfigError naming the file and the dotted key. Each run writes
its resolved config beside its outputs (`write_resolved`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpa_ray import storage


class ConfigError(ValueError):
    """A configuration file or override that does not fit the schema."""


def _as_text(value):
    """YAML reads 1234 as a number: a string field (a path, a hash) takes it as its text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_as_text)]


def _sha256(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"a SHA-256 is 64 hexadecimal digits, got {len(value)} characters (quote it in YAML)")
    return value


Sha256 = Annotated[Text | None, AfterValidator(_sha256)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthConfig(_Section):
    size: int = Field(512, ge=128)  # image side in pixels (2048 and 3072 as in HPA work)
    bit_depth: Literal[8, 16] = 8  # PNG bit depth of the written channels
    cells_per_megapixel: float = Field(4.0, gt=0)  # density; HPA images hold ~15 per 2048²
    negative_fraction: float = Field(0.1, ge=0, le=1)  # share of images labelled Negative only
    max_labels: int = Field(3, ge=1, le=18)  # most localisation classes per image
    show_probability: float = Field(0.7, gt=0, le=1)  # chance a cell shows each image label …
    # … except these classes, shown by a minority of cells as in HPA (cell cycle, single-cell
    # variability); {} makes every class as common as the rest (the data before this existed).
    class_show_probability: dict[int, float] = {3: 0.4, 5: 0.4, 11: 0.15, 12: 0.35, 15: 0.25, 17: 0.5}
    noise: float = Field(0.03, ge=0)  # std of additive noise, in units of full brightness

    @field_validator("class_show_probability")
    @classmethod
    def _classes(cls, value: dict[int, float]) -> dict[int, float]:
        for c, p in value.items():
            if not 0 <= c < 18 or not 0 < p <= 1:
                raise ValueError(f"class {c}: {p}; classes are 0-17 (not Negative), probabilities in (0, 1]")
        return value


class FoldsConfig(_Section):
    n_folds: int = Field(5, ge=2)  # number of folds
    seed: int = 0  # permutes the images before stratifying
    order: int = Field(2, ge=1, le=3)  # label-combination order of the iterative stratification
    min_positives: int = Field(50, ge=1)  # classes with fewer positives are not repaired
    tolerance: float = Field(0.03, ge=0)  # repair stops when every such class is this close
    repair_steps: int = Field(2000, ge=0)  # most single-image moves of the repair pass


class TrainConfig(_Section):
    plugins: list[str] = []  # modules imported first, in every process: they may register backbones
    model: str = (
        "efficientnet-b2"  # a backbone of hpa_ray.backbones: efficientnet-b2, timm-efficientnet_b2, small, tiny
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
    mixed_precision: bool | Literal["auto"] = "auto"  # bf16 autocast + channels-last; auto: on CUDA
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
        from hpa_ray.backbones import backbone_names
        from hpa_ray.plugins import import_plugins

        import_plugins(info.data.get("plugins", []))
        if name not in backbone_names():
            raise ValueError(f"unknown model {name!r}; registered: {', '.join(backbone_names())}")
        return name


class SearchDim(_Section):
    type: Literal["loguniform", "uniform", "choice"]  # how the values are drawn
    low: float | None = None  # loguniform/uniform: lower bound
    high: float | None = None  # loguniform/uniform: upper bound
    values: list | None = None  # choice: the candidates


class AshaConfig(_Section):
    grace_period: int = Field(2, ge=1)  # epochs every trial gets before it may be stopped
    reduction_factor: int = Field(2, ge=2)  # 1/reduction_factor of the trials go on at each rung


class TuneConfig(_Section):
    fold: int = 0  # the fold whose validation AP is optimised
    num_samples: int = Field(8, ge=1)  # trials
    max_concurrent_trials: int | Literal["auto"] = "auto"  # what fits (train.concurrent_trials)
    seed: int = 0  # Optuna's sampler seed
    # Where the Optuna study lives (a SQLAlchemy URL, e.g. postgresql://… or sqlite:////shared/s.db);
    # None: SQLite at RUN_DIR/study.db. Each search is a study of its own name in it.
    study_storage: str | None = None
    asha: AshaConfig = AshaConfig()  # early stopping of weak trials
    search_space: dict[str, SearchDim] = {  # TrainConfig keys → how to draw them
        "lr": SearchDim(type="loguniform", low=1e-4, high=3e-3),
        "weight_decay": SearchDim(type="loguniform", low=1e-6, high=1e-3),
        "batch_size": SearchDim(type="choice", values=[16, 32, 64]),
        "epochs": SearchDim(type="choice", values=[6, 8]),
    }
    train: TrainConfig = TrainConfig()  # the base every trial starts from

    def max_epochs(self) -> int:
        """The most epochs a trial may run (ASHA's max_t): the largest searched `epochs`, else the base's."""
        dim = self.search_space.get("epochs")
        return int(max(dim.values)) if dim and dim.type == "choice" and dim.values else self.train.epochs

    @model_validator(mode="after")
    def _grace_within_epochs(self) -> TuneConfig:
        # Ray's ASHA asserts this with a bare traceback; say which settings disagree instead.
        most = self.max_epochs()
        if self.asha.grace_period > most:
            raise ValueError(f"asha.grace_period ({self.asha.grace_period}) is more than the most epochs a trial "
                             f"runs ({most}): lower it or search more epochs")  # fmt: skip
        return self


class _WorkingResolution(_Section):
    """Where a backend segments: `scale` of the image (made for HPA's 2048² images, nuclei of
    radius ~78 px: ~20 px at 1/4); an image whose nuclei would span fewer than
    min_working_nucleus_radius px at `scale` (a 512² image: ~5) is segmented finer, up to full
    resolution, so that they span that many (backends.nuclei.working_scale); 0: never."""

    scale: float = Field(0.25, gt=0, le=1)  # model resolution relative to the image
    min_working_nucleus_radius: float = Field(10.0, ge=0)  # working px; 0: always `scale`


class ClassicalConfig(_WorkingResolution):
    nucleus_sigma: float = Field(8.0, ge=0)  # blue smoothing, full-resolution px
    nucleus_threshold: float = Field(1.0, gt=0)  # × Otsu level of the smoothed blue channel
    nucleus_split_h: float = Field(10.0, gt=0)  # distance-peak height (px) that splits nuclei
    # Touching pieces of the split are joined again (one lobed nucleus) unless the blue signal
    # dips along their border below merge_valley × the dimmer piece's median, or the dimmer
    # piece's median is below merge_contrast × the brighter's (see classical.merge_lobes).
    merge_lobes: bool = True
    merge_valley: float = Field(0.85, ge=0)
    merge_contrast: float = Field(0.75, ge=0, le=1)
    min_nucleus_area: int = Field(2400, ge=0)  # full-resolution px
    body_sigma: float = Field(8.0, ge=0)  # cell-body smoothing, full-resolution px
    cell_threshold: float = Field(0.2, gt=0)  # × Otsu level of the smoothed cell-body signal
    green_weight: float = Field(0.5, ge=0)  # weight of the protein channel in the body signal
    min_cell_area: int = Field(12800, ge=0)  # full-resolution px
    min_signal: float = Field(0.02, ge=0, le=1)  # blue peak below this: no nuclei at all
    # Uneven illumination: a nucleus's threshold scales with its peak / the typical peak, a
    # cell's foreground level with the body signal over its nucleus / the typical one: never
    # raised, never below illumination_floor × the image's level (see classical._lit_objects).
    follow_illumination: bool = True
    illumination_floor: float = Field(0.3, gt=0, le=1)
    # The pixel values above (sigmas, split height, areas) are for nuclei of the reference
    # radius; with adapt_to_nucleus_size each image's typical nucleus radius r is estimated (in
    # working px, as if at `scale`) and they scale by k = r / reference (lengths ×k, areas ×k²,
    # k within 1/3..3) when r is beyond ×/÷ nucleus_radius_tolerance of the reference (another
    # magnification, a smaller cell type) after the working scale has followed the nuclei;
    # within it (the spread of cell lines at one magnification: the fitted images span
    # 74-93 px) they stay as they are.
    adapt_to_nucleus_size: bool = True
    reference_nucleus_radius: float = Field(78.0, gt=0)  # full-resolution px
    nucleus_radius_tolerance: float = Field(1.2, ge=1)


class HpaConfig(_WorkingResolution):
    nuclei_model: Text | None = None  # path to dpn_unet_nuclei_v1.pth (a pickled module)
    cell_model: Text | None = None  # path to dpn_unet_cell_3ch_v1.pth (a pickled module)
    nuclei_sha256: Sha256 = None  # expected SHA-256 of nuclei_model, checked when set
    cell_sha256: Sha256 = None  # expected SHA-256 of cell_model, checked when set
    device: Literal["auto", "cuda", "cpu"] = "auto"  # auto: CUDA when the actor has a GPU
    nucleus_threshold: float = Field(0.4, gt=0, lt=1)  # interior probability for nucleus seeds
    cell_threshold: float = Field(0.5, gt=0, lt=1)  # 1 - background probability for cells
    min_nucleus_area: int = Field(2400, ge=0)  # full-resolution px
    min_cell_area: int = Field(12800, ge=0)  # full-resolution px


class SegmentConfig(_Section):
    plugins: list[str] = []  # modules imported first, in every process: they may register backends
    backend: str = "classical"  # a registered segmentation backend: classical, hpa, or a plugin's
    crop_size: int = Field(260, ge=8)  # side S of the (C, S, S) uint8 crop per cell
    batch_size: int = Field(4, ge=1)  # images per call of a segmentation actor
    images_per_block: int | Literal["auto"] = "auto"  # images per task and Parquet file; auto: 1-16
    infer_on: Literal["auto", "actors", "tasks"] = "auto"  # auto: actors for hpa, tasks for classical
    actors: int | Literal["auto"] = "auto"  # actor pool size; auto: GPUs if hpa, else CPUs
    actor_num_cpus: float = Field(0.5, gt=0)  # CPUs reserved per actor (not all: tasks need some)
    actor_num_gpus: float = Field(1.0, ge=0)  # GPUs per actor when the backend uses GPUs
    task_num_cpus: float = Field(1.0, gt=0)  # CPUs per decode / cut task
    # Bits the data in 16-bit image files use (8-16), for scaling them to 8 bits; auto: each image's
    # own (images.bit_depth). Set it (12 for a 12-bit camera) to scale every image of a set alike.
    input_bits: int | Literal["auto"] = "auto"
    classical: ClassicalConfig = ClassicalConfig()
    hpa: HpaConfig = HpaConfig()
    # Plugin backends' sections by backend name: given as `NAME: {...}` (or `segment.NAME` in predict)
    # like the built-in ones, kept and written back under `sections:`.
    sections: dict[str, dict] = {}

    @field_validator("input_bits")
    @classmethod
    def _input_bits(cls, value):
        if value != "auto" and not 8 <= value <= 16:
            raise ValueError(f"input_bits must be auto or 8 to 16, not {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _plugin_sections(cls, data):
        """Import the plugins, then move `NAME: {...}` of a registered plugin backend into sections."""
        if not isinstance(data, dict):
            return data
        from hpa_ray.backends.registry import backend_names
        from hpa_ray.plugins import import_plugins

        plugins = data.get("plugins") or []
        import_plugins(plugins if isinstance(plugins, list) else [])
        moved = {k: v for k, v in data.items() if k not in cls.model_fields and k in backend_names()}
        if not moved:
            return data
        rest = {k: v for k, v in data.items() if k not in moved}
        return {**rest, "sections": {**(data.get("sections") or {}), **moved}}

    @model_validator(mode="after")
    def _registered_backend(self):
        from hpa_ray.backends.registry import backend_spec

        backend_spec(self.backend)  # ValueError naming the registered ones
        for name, values in self.sections.items():
            backend_spec(name).config.model_validate(values)
        return self

    def section(self) -> BaseModel:
        """The chosen backend's validated config section."""
        if self.backend in type(self).model_fields:
            return getattr(self, self.backend)
        from hpa_ray.backends.registry import backend_spec

        return backend_spec(self.backend).config.model_validate(self.sections.get(self.backend, {}))


class PredictConfig(_Section):
    min_confidence: float = Field(0.01, ge=0, le=1)  # (cell, class) pairs below this are not written
    top_k: int = Field(8, ge=1, le=19)  # most classes written per cell, most confident first
    tta: bool = True  # also score the horizontally and vertically flipped crop; mean of all
    batch_size: int = Field(64, ge=1)  # crops per forward pass
    images_per_batch: int = Field(4, ge=1)  # images per call of a GPU classifier actor (CPU: a block of images)
    use_gpu: bool | Literal["auto"] = "auto"  # classify in GPU actors; auto: when the cluster has GPUs
    actors: int | Literal["auto"] = "auto"  # GPU classifier actors; auto: one per GPU
    actor_num_gpus: float = Field(0.5, gt=0, le=1)  # GPU share per classifier actor (hpa segmentation may share it)
    actor_num_cpus: float = Field(0.5, gt=0)  # CPUs per classifier actor (it feeds the GPU; tasks cut the cells)
    # A cell's confidence with its image's (bag models: the image head; cell models: the image's
    # most confident cell): blend (1 - w) cell + w image, product cell × image, or cell alone.
    fusion: Literal["blend", "product", "cell"] = "blend"
    image_weight: float = Field(0.7, ge=0, le=1)  # fusion blend: w, the weight of the image prediction
    negative: Literal["model", "complement"] = "model"  # Negative: the model's, or 1 - the top other class
    border_weight: float = Field(1.0, ge=0, le=1)  # confidences × this for cells cut by the image border
    small_cell_weight: float = Field(1.0, ge=0, le=1)  # confidences × this for small cells …
    small_cell_fraction: float = Field(0.25, ge=0, le=1)  # … those under this × their image's median area
    # SegmentConfig keys replacing those of the run's segment_config.yaml (e.g. hpa.cell_model),
    # checked against SegmentConfig here, so that a misspelt key fails before any model loads.
    segment: dict = {}

    @field_validator("segment")
    @classmethod
    def _segment_keys(cls, updates: dict) -> dict:
        try:
            SegmentConfig.model_validate(_merge(SegmentConfig().model_dump(), updates))
        except ValidationError as exc:
            raise ValueError("; ".join(_describe(exc, None).splitlines())) from None
        return updates


Cfg = TypeVar("Cfg", bound=BaseModel)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    tree[keys[-1]] = value


_MAX_YAML = 1 << 20  # bytes: no configuration file is this large


def safe_yaml(text: str, source: str):
    """YAML → Python values, safely: plain YAML only (no tags that run code), no aliases (an
    alias bomb expands a few hundred bytes into gigabytes), at most 1 MiB. ConfigError naming
    `source` otherwise."""
    if len(text) > _MAX_YAML:
        raise ConfigError(f"{source}: {len(text)} bytes; a configuration is at most {_MAX_YAML}")
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ConfigError(f"{source}: YAML aliases (*name) are not accepted in configuration")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML (plain values only): {exc}") from None


def parse_overrides(overrides: list[str]) -> dict:
    """["classical.scale=0.5", "crop_size=128"] → nested dict, values parsed as YAML."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. classical.scale=0.5)")
        value = safe_yaml(raw, f"override {key.strip()}")
        if isinstance(value, int) and not isinstance(value, bool) and str(value) != raw.strip():
            value = raw.strip()  # digits YAML would change (leading zeros, octal): a hash, an ID
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(error: ValidationError, source: str | None) -> str:
    """One line per error: `source: key: what (got value)`; no source: `key: what (got value)`."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            line = f"unknown key {key!r}"
        elif isinstance(item.get("input"), dict):  # a whole section: the message names what is wrong
            line = f"{key}: {msg}" if key else msg
        else:
            line = f"{key or '(top level)'}: {msg} (got {item.get('input')!r})"
        lines.append(f"{source}: {line}" if source else line)
    return "\n".join(lines)


def _read_file(path: str, chain: tuple[str, ...] = ()) -> dict:
    """One config file as a dict; a `base: FILE` key (relative to this file) is read first and
    this file's keys override it (an overlay states only what differs)."""
    try:
        data = safe_yaml(storage.read_text(path), path) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist" + (f" (base of {chain[-1]})" if chain else "")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: the path of the file this one overrides, got {base!r}")
    if not (storage.is_uri(base) or Path(base).is_absolute()):
        joined = storage.join(storage.parent(path), base)
        base = joined if storage.is_uri(joined) else os.path.normpath(joined)
    if base in chain or base == path:
        raise ConfigError(f"{path}: base {base} is already in the chain {' -> '.join(chain)}")
    return _merge(_read_file(base, (*chain, path)), data)


def load_config(cls: type[Cfg], path: str | Path | list | None = None, overrides: list[str] | None = None) -> Cfg:
    """Defaults of `cls`, updated by the YAML file(s) at `path` in order (each may name a `base`
    it overrides), then by KEY=VALUE overrides."""
    paths = [str(p) for p in ([] if path is None else path if isinstance(path, list | tuple) else [path])]
    data: dict = {}
    for one in paths:
        data = _merge(data, _read_file(one))
    source = " + ".join(paths) or "defaults"
    if overrides:
        source = f"{source} + overrides"
        data = _merge(data, parse_overrides(overrides))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def write_resolved(cfg: BaseModel, path: str | Path) -> str | Path:
    """Write the fully resolved config as YAML (loadable again by load_config)."""
    storage.write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def with_updates(cfg: Cfg, updates: dict, source: str) -> Cfg:
    """`cfg` with the nested `updates` applied and validated again (ConfigError naming `source`)."""
    try:
        return type(cfg).model_validate(_merge(cfg.model_dump(), updates))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
