"""`python -m hpa_ray.evaluate`."""

import sys

from hpa_ray.evaluate.score import main as _main

sys.exit(_main())
