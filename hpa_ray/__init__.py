"""hpa_ray: Human Protein Atlas single-cell classification as a Ray pipeline.

The public API, imported lazily so that `import hpa_ray.backends...` needs neither Ray nor
every stage's dependencies (GPU machines run the backends alone). Each stage is also a CLI:
`python -m hpa_ray` lists them.
"""

from __future__ import annotations

import importlib

_API = {
    "CHANNELS": "hpa_ray.schema",
    "CLASS_NAMES": "hpa_ray.schema",
    "NUM_CLASSES": "hpa_ray.schema",
    "parse_labels": "hpa_ray.schema",
    "crops_to_numpy": "hpa_ray.schema",
    "ConfigError": "hpa_ray.config",
    "SegmentConfig": "hpa_ray.config",
    "SynthConfig": "hpa_ray.config",
    "load_config": "hpa_ray.config",
    "write_resolved": "hpa_ray.config",
    "decode_mask": "hpa_ray.masks",
    "encode_mask": "hpa_ray.masks",
    "SegmentResult": "hpa_ray.segment",
    "run_segment": "hpa_ray.segment",
    "generate_synthetic": "hpa_ray.synth",
    "TrainConfig": "hpa_ray.config",
    "TuneConfig": "hpa_ray.config",
    "PredictConfig": "hpa_ray.config",
    "build_model": "hpa_ray.model",
    "make_folds": "hpa_ray.folds",
    "write_folds": "hpa_ray.folds",
    "BackendSpec": "hpa_ray.backends.registry",
    "register_backend": "hpa_ray.backends.registry",
    "register_backbone": "hpa_ray.backbones",
    "fit_fold": "hpa_ray.train",
    "train_folds": "hpa_ray.train",
    "run_search": "hpa_ray.tune",
    "run_predict": "hpa_ray.predict",
    "validate_submission": "hpa_ray.submission",
    "evaluate_files": "hpa_ray.evaluate",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'hpa_ray' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    return getattr(module, "generate" if name == "generate_synthetic" else name)
