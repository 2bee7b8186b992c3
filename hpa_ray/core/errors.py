"""The one error base of hpa_ray.

Every error that means "this input cannot be used" (a file, a config key, a model, a lock held by
another run, a request the cluster cannot serve) derives from HpaRayError; each stage's CLI
catches it and exits 2 with one `error:` line that says what and where (runtime.cli.guarded).
Each keeps its older built-in base too (ValueError, RuntimeError), so code that caught those
still does.
"""

from __future__ import annotations


class HpaRayError(Exception):
    """Unusable input: the stage stops with one `error:` line and exit status EXIT_CODE."""

    EXIT_CODE = 2
