"""Stage: image-level folds by iterative stratification (`python -m hpa_ray.folds`)."""
