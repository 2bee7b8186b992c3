"""Stage: a submission's mAP against true cells (`python -m hpa_ray.evaluate`)."""
