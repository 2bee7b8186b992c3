"""`python -m hpa_ray.train`."""

import sys

from hpa_ray.runtime import session
from hpa_ray.train.fit import main as _main

sys.exit(session.exit_code_after_shutdown(_main()))
