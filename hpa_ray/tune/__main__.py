"""`python -m hpa_ray.tune`."""

import sys

from hpa_ray.runtime import session
from hpa_ray.tune.search import main as _main

sys.exit(session.exit_code_after_shutdown(_main()))
