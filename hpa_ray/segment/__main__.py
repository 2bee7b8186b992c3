"""`python -m hpa_ray.segment`."""

import sys

from hpa_ray.runtime import session
from hpa_ray.segment.stage import main as _main

# A process that only segments needs no Ray dashboard (~1 s of start-up); HPA_RAY_DASHBOARD=1 keeps it.
session.no_dashboard_unless_asked()
sys.exit(session.exit_code_after_shutdown(_main()))
