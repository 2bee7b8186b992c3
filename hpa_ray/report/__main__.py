"""`python -m hpa_ray.report`."""

import sys

from hpa_ray.report.build import main as _main

sys.exit(_main())
