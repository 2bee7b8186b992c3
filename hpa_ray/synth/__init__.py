"""Stage: synthetic HPA-like images with known cells and labels (`python -m hpa_ray.synth`)."""
