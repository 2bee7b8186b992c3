"""Stage: cell segmentation of images into per-cell Parquet (`python -m hpa_ray.segment`)."""
