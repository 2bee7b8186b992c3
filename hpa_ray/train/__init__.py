"""Stage: training one model per fold with Ray Train (`python -m hpa_ray.train`)."""
