"""`python -m hpa_ray.folds`."""

import sys

from hpa_ray.folds.stratify import main as _main

sys.exit(_main())
