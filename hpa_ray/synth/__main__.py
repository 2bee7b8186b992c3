"""`python -m hpa_ray.synth`."""

import sys

from hpa_ray.synth.generate import main as _main

sys.exit(_main())
