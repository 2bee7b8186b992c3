"""Stage: the Kaggle submission from images and trained folds (`python -m hpa_ray.predict`)."""
