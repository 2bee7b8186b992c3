"""Stage: the hyperparameter search, Optuna + ASHA under Ray Tune (`python -m hpa_ray.tune`)."""
