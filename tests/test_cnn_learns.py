"""The CNN pipeline must actually learn: a task any working pipeline solves, on CPU in seconds.

Synthetic 2-channel crops, 3 classes: a bright Gaussian blob in channel 0 only, in channel 1 only,
or in both, at a random position and amplitude over noise. Class sizes are unequal (the balancing
sampler runs), labels are strings whose sorted order differs from their order of appearance (the
label ↔ index mapping is exercised), a grouped validation share drives early stopping and best-epoch
restoration, and crops are resized on the fly. One small member trained for a few epochs must
classify held-out crops at ≥ 90 %, and predict / predict_proba / classes_ must agree.

This test failed (≈ 60 % held-out, 100 % in training mode) before BatchNorm statistics were
recalibrated after training (fusion.cnn.train.recalibrate_batchnorm).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.cnn.ensemble import CNNEnsemble

CLASSES = np.array(["zeta_ch0", "alpha_ch1", "mid_both"])  # sorted order: alpha, mid, zeta


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def blob_crops(counts, size=24, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    y = y[rng.permutation(len(y))]
    x = rng.normal(300, 60, size=(len(y), size, size, 2))
    yy, xx = np.mgrid[:size, :size]
    for i, k in enumerate(y):
        cy, cx = rng.uniform(7, size - 7, 2)
        blob = rng.uniform(1500, 3000) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5 ** 2))
        if k in (0, 2):
            x[i, :, :, 0] += blob
        if k in (1, 2):
            x[i, :, :, 1] += blob
    return np.clip(x, 0, 65535).astype(np.uint16), CLASSES[y]


def _fit_blobs(precision: str = "auto") -> CNNEnsemble:
    x, y = blob_crops([80, 40, 40], seed=0)
    groups = np.arange(len(y)) % 8  # validation split by group, as with compounds
    est = CNNEnsemble(backbones=["resnet10t"], dropouts=[(0.5, 0.3, 0.1)], image_size=20, epochs=5, batch_size=16,
                      val_fraction=0.2, patience=5, balance="sample", device="cpu", seed=0, precision=precision)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return est.fit(x, y, groups=groups)
    finally:
        torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def fp32_model():
    return _fit_blobs()


def test_small_cnn_learns_held_out_blobs(fp32_model):
    est = fp32_model
    assert list(est.classes_) == sorted(CLASSES)

    xt, yt = blob_crops([30, 30, 30], seed=1)
    proba = est.predict_proba(xt)
    pred = est.predict(xt)
    assert proba.shape == (len(xt), 3)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert np.array_equal(pred, est.classes_[proba.argmax(1)])
    acc = float(np.mean(pred == yt))
    assert acc >= 0.9, f"held-out accuracy {acc:.3f}; history {est.histories_}"
    for k in CLASSES:  # every class is recognised, not just the majority
        assert np.mean(pred[yt == k] == k) >= 0.8, (k, acc)
    hist = est.histories_[0]
    assert all("val_accuracy" in e for e in hist["epochs"])
    assert 1 <= hist["best_epoch"] <= len(hist["epochs"])


def test_bf16_autocast_path_on_cpu(fp32_model):
    """The GPU precision path (bf16 autocast), exercised on CPU: the CBAM network computes in bf16, the
    trained model's bf16 predictions agree with its fp32 ones, and a bf16 training step updates the
    weights with a finite loss. (Full bf16 training is ~25× slower than fp32 on a CPU without bf16
    instructions, so accuracy after bf16 training is a GPU benchmark, not a test.)"""
    from fusion.cnn.train import TrainConfig, _autocast, build_model, infer, train_model

    net = fp32_model.members_[0]
    xb = torch.randn(2, 2, 20, 20)
    was = net.training
    net.eval()
    with _autocast(torch.device("cpu"), "bf16"):
        assert net(xb).dtype == torch.bfloat16
    with _autocast(torch.device("cpu"), "auto"):  # auto = fp32 on CPU
        assert net(xb).dtype == torch.float32
    net.train(was)

    xt, yt = blob_crops([30, 30, 30], seed=1)
    xtt = fp32_model.preprocessor_.transform(xt, resize=False)
    p32, _ = infer(net, xtt, fp32_model.preprocessor_, "cpu", precision="fp32")
    p16, _ = infer(net, xtt, fp32_model.preprocessor_, "cpu", precision="bf16")
    assert np.mean(p32.argmax(1) == p16.argmax(1)) >= 0.95
    assert np.abs(p32 - p16).max() < 0.1

    x, y = blob_crops([16, 16, 16], size=16, seed=2)
    cfg = TrainConfig(backbone="resnet10t", epochs=1, batch_size=16, balance="none", augment=None, device="cpu",
                      precision="bf16", bn_samples=0)
    before = {k: v.clone() for k, v in build_model(cfg, 2, 3).state_dict().items()}
    res = train_model(fp32_model.preprocessor_.transform(x, resize=False), np.repeat([0, 1, 2], 16), 3, cfg)
    assert np.isfinite(res.history[-1]["train_loss"])
    after = res.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].dtype.is_floating_point)
    assert all(v.dtype == torch.float32 for v in after.values() if v.dtype.is_floating_point)  # fp32 master weights
    with pytest.raises(Exception, match="precision"):
        TrainConfig(precision="fp8")
