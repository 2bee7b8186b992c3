"""Training's pieces without Ray: the model, an epoch's timing, how many trainings fit at once."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from hpa_ray.train.config import TrainConfig
from hpa_ray.train.fit import _train_epoch, _Worker, concurrent_trials
from hpa_ray.train.model import ModelError, build_model


def test_efficientnet_b2_forward_backward_on_cpu(tmp_path):
    torch.manual_seed(0)
    model = build_model(TrainConfig())
    x = torch.randn(2, 4, 64, 64)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), torch.zeros(2, 19))
    loss.backward()
    assert model(x).shape == (2, 19)
    stem = model.backbone[0]._conv_stem.weight
    assert stem.shape[1] == 4 and stem.grad.abs().sum() > 0
    # ImageNet weights from a local file of efficientnet-pytorch's contract (3 channels, 1000 classes).
    from efficientnet_pytorch import EfficientNet

    imagenet = EfficientNet.from_name("efficientnet-b2").state_dict()
    torch.save(imagenet, tmp_path / "b2.pth")
    loaded = build_model(TrainConfig(pretrained=str(tmp_path / "b2.pth")))
    net = loaded.backbone[0]
    stem = net._conv_stem.weight
    assert torch.equal(stem[:, :3], imagenet["_conv_stem.weight"]) and torch.equal(stem[:, 3], stem[:, 0])
    assert torch.equal(net._blocks[3]._depthwise_conv.weight, imagenet["_blocks.3._depthwise_conv.weight"])
    with pytest.raises(ModelError, match="do not exist"):
        build_model(TrainConfig(pretrained=str(tmp_path / "missing.pth")))


class _SlowInput:
    """A training method whose batches each take `delay` s to arrive (a slow reader)."""

    def __init__(self, n: int, delay: float):
        self.n, self.delay = n, delay

    def batches(self, shard, train, seed):
        for _ in range(self.n):
            time.sleep(self.delay)
            yield torch.ones(4, 3)

    def loss(self, model, batch):
        return model(batch).pow(2).mean()

    def items(self, batch):
        return len(batch)


def test_an_epoch_reports_the_time_spent_waiting_for_input():
    model = torch.nn.Linear(3, 2)
    worker = _Worker(TrainConfig(), "", 0, 1, torch.device("cpu"), False, model, model, _SlowInput(5, 0.05),
                     torch.optim.SGD(model.parameters(), lr=0.1), None)  # fmt: skip
    stats = _train_epoch(worker, None, epoch=0)
    assert stats["first_batch_s"] >= 0.05 and stats["input_wait_s"] >= 5 * 0.05
    assert stats["input_wait_s"] + stats["first_step_s"] <= stats["train_pass_s"]
    assert stats["train_images_per_s"] == pytest.approx(20 / stats["train_pass_s"])
    assert np.isfinite(stats["train_loss"])


@pytest.mark.parametrize(("cpus", "workers", "cpus_per_worker", "streamed", "cached"),
                         [(2, 1, 0.5, 2, 3), (5, 2, 1.0, 2, 2), (4, 1, 1.0, 3, 4), (1, 1, 1.0, 1, 1)])  # fmt: skip
def test_cached_crops_let_one_more_training_start_where_its_workers_fit(monkeypatch, cpus, workers, cpus_per_worker,
                                                                        streamed, cached):  # fmt: skip
    # One CPU stays free for the data tasks of streamed crops; cached crops need it only while
    # a training loads them, so the last to start may take it, but never more CPUs than there are.
    monkeypatch.setattr("hpa_ray.runtime.session.cluster_resources", lambda: {"CPU": cpus})
    cfg = TrainConfig(num_workers=workers, cpus_per_worker=cpus_per_worker, use_gpu=False)
    assert concurrent_trials(cfg, 10, cached=False) == streamed
    assert concurrent_trials(cfg, 10, cached=True) == cached
    assert concurrent_trials(cfg, 2, cached=True) == min(2, cached)
