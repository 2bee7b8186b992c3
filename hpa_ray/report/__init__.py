"""Stage: the HTML report of a run (`python -m hpa_ray.report`)."""
