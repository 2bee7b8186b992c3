"""`python -m hpa_ray.predict`."""

import sys

from hpa_ray.predict.run import main as _main
from hpa_ray.runtime import session

session.no_dashboard_unless_asked()  # a process that only predicts needs no Ray dashboard
sys.exit(session.exit_code_after_shutdown(_main()))
