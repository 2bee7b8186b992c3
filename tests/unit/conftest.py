"""The unit tier: tests that never start Ray (no local Ray, no stage run in a subprocess, no Ray
Data, Train or Tune run). A unit test that starts Ray fails at once: move it to tests/stages."""

from __future__ import annotations

import pytest


def _no_ray(*args, **kwargs):
    raise RuntimeError("unit tests run without Ray: move this test to tests/stages")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """`ray.init` raises: init_ray, Ray Data's and Ray Train's own start of a Ray all call it."""
    monkeypatch.setattr("ray.init", _no_ray)
