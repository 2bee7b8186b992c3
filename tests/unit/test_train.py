"""Training's pieces without Ray: the model, an epoch's timing, how many trainings fit at once."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from hpa_ray.train.config import TrainConfig
from hpa_ray.train.fit import check_resumable, concurrent_trials
from hpa_ray.train.model import ModelError, build_model
from hpa_ray.train.worker import _train_epoch, _Worker


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


def test_binary_ap_is_scikit_learns_number_ties_included():
    from sklearn.metrics import average_precision_score

    from hpa_ray.core.metrics import binary_ap

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 60))
        labels = rng.random(n) < rng.uniform(0.05, 0.9)
        labels[rng.integers(n)] = True  # at least one positive
        # coarse scores: many ties, as bf16 logits would give; float32 as the models give
        scores = (np.round(rng.random(n) * rng.choice([3, 10, 1000])) / 10).astype(np.float32)
        assert binary_ap(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12), trial
    assert binary_ap(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])) == pytest.approx((1 + 2 / 3) / 2)
    assert binary_ap(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5), "a tie is one threshold"
    assert np.isnan(binary_ap(np.array([0, 1]), np.array([np.nan, 0.5]))), "a diverged model has no AP"


@pytest.mark.parametrize("method", ["cell", "bag"])
def test_heads_give_fp32_logits_under_bf16_autocast(method):
    """The backbone runs in bf16, the heads in fp32: bf16 logits tie across cells and lower AP."""
    torch.manual_seed(0)
    model = build_model(TrainConfig(model="tiny", method=method, pooling="attention"))
    x = torch.randn(3, 4, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x) if method == "cell" else model(x.unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))
        features = model.backbone[0](x)
    assert all(logits.dtype == torch.float32 for logits in (out if isinstance(out, tuple) else (out,)))
    assert features.dtype == torch.bfloat16, "the backbone itself still runs in bf16"


def test_a_fold_resumes_only_with_its_own_config_where_auto_caching_was_decided(tmp_path):
    from hpa_ray.core.config import ConfigError, write_resolved

    write_resolved(TrainConfig(model="tiny", epochs=5, cache_data=True), tmp_path / "config.yaml")  # as Tune records it
    check_resumable(str(tmp_path), TrainConfig(model="tiny", epochs=5))  # cache_data: auto, decided True there
    check_resumable(str(tmp_path / "not-started"), TrainConfig(model="small"))
    with pytest.raises(ConfigError, match="was trained with another config .* or give a new --out"):
        check_resumable(str(tmp_path), TrainConfig(model="tiny", epochs=6))
