"""hpa_ray: Human Protein Atlas single-cell classification as a Ray pipeline.

The public API, imported lazily so that `import hpa_ray.segment.backends...` needs neither Ray nor
every stage's dependencies (GPU machines run the backends alone). Each stage is also a CLI:
`python -m hpa_ray` lists them.
"""

from __future__ import annotations

import importlib

_API = {
    "CHANNELS": "hpa_ray.core.schema",
    "CLASS_NAMES": "hpa_ray.core.schema",
    "NUM_CLASSES": "hpa_ray.core.schema",
    "parse_labels": "hpa_ray.core.schema",
    "crops_to_numpy": "hpa_ray.core.schema",
    "ConfigError": "hpa_ray.core.config",
    "SegmentConfig": "hpa_ray.segment.config",
    "SynthConfig": "hpa_ray.synth.config",
    "load_config": "hpa_ray.core.config",
    "write_resolved": "hpa_ray.core.config",
    "decode_mask": "hpa_ray.core.masks",
    "encode_mask": "hpa_ray.core.masks",
    "SegmentResult": "hpa_ray.segment.stage",
    "run_segment": "hpa_ray.segment.stage",
    "generate_synthetic": "hpa_ray.synth.generate",
    "TrainConfig": "hpa_ray.train.config",
    "TuneConfig": "hpa_ray.tune.config",
    "PredictConfig": "hpa_ray.predict.config",
    "build_model": "hpa_ray.train.model",
    "make_folds": "hpa_ray.folds.stratify",
    "write_folds": "hpa_ray.folds.stratify",
    "BackendSpec": "hpa_ray.segment.registry",
    "register_backend": "hpa_ray.segment.registry",
    "register_backbone": "hpa_ray.train.backbones",
    "fit_fold": "hpa_ray.train.fit",
    "train_folds": "hpa_ray.train.fit",
    "run_search": "hpa_ray.tune.search",
    "run_predict": "hpa_ray.predict.run",
    "validate_submission": "hpa_ray.predict.submission",
    "evaluate_files": "hpa_ray.evaluate.score",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'hpa_ray' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    return getattr(module, "generate" if name == "generate_synthetic" else name)
