"""hpa_ray: Human Protein Atlas single-cell classification as a Ray pipeline.

The public API; each stage is also a CLI: `python -m hpa_ray` lists them.
"""

from hpa_ray.config import ConfigError, SegmentConfig, SynthConfig, load_config, write_resolved
from hpa_ray.masks import decode_mask, encode_mask
from hpa_ray.schema import CHANNELS, CLASS_NAMES, NUM_CLASSES, parse_labels
from hpa_ray.segment import SegmentResult, run_segment
from hpa_ray.synth import generate as generate_synthetic

__all__ = [
    "CHANNELS",
    "CLASS_NAMES",
    "NUM_CLASSES",
    "ConfigError",
    "SegmentConfig",
    "SegmentResult",
    "SynthConfig",
    "decode_mask",
    "encode_mask",
    "generate_synthetic",
    "load_config",
    "parse_labels",
    "run_segment",
    "write_resolved",
]
