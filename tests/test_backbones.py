"""Backbones by name: timm models other than ResNets get CBAM after every stage and train on
5-channel crops (one optimiser step each, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.cnn.cbam import CBAM
from fusion.cnn.train import TrainConfig, build_model, train_model


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("name, stages", [
    ("efficientnet_b0", ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]),   # strides 4, 8, 16, 32
    ("convnext_atto", ["stages.0", "stages.1", "stages.2", "stages.3"]),
])
def test_timm_backbone_trains_one_step_with_cbam_on_5_channels(name, stages):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((8, 5, 32, 32), dtype=np.float32))
    y = np.array([0, 1] * 4)
    cfg = TrainConfig(backbone=name, epochs=1, batch_size=8, balance="none", augment=None, label_smoothing=0.0,
                      bn_samples=8, device="cpu", seed=0, lr_backbone=1e-3, lr_head=1e-3)
    before = build_model(cfg, in_chans=5, n_classes=2)  # the same seeded initialisation train_model starts from
    assert before.stage_names == stages
    assert len(before.cbam) == len(stages) and all(isinstance(m, CBAM) for m in before.cbam.values())
    seen: list[str] = []
    for key, mod in before.cbam.items():
        mod.register_forward_hook(lambda m, i, o, key=key: seen.append(key))
    before.eval()(x[:2])
    assert seen == [s.replace(".", "_") for s in stages]  # every CBAM sits in the forward pass, in stage order

    res = train_model(x, y, 2, cfg)
    assert len(res.history) == 1 and np.isfinite(res.history[0]["train_loss"])
    after = res.model
    old = before.state_dict()
    new = after.state_dict()
    assert set(old) == set(new)
    # the optimiser step reached the CBAM modules (gradients flowed through them), the backbone and the head
    for prefix in ("cbam.", "backbone.", "neck.", "classifier."):
        changed = [k for k in new if k.startswith(prefix) and new[k].is_floating_point()
                   and not torch.equal(old[k], new[k])]
        assert changed, f"{name}: no {prefix} parameter changed after one step"
    for key in before.cbam:
        assert any(not torch.equal(old[k], new[k]) for k in new if k.startswith(f"cbam.{key}.")), key
    with torch.no_grad():
        out = after.eval()(x)
    assert out.shape == (8, 2) and torch.isfinite(out).all()
    assert after.features(x).shape == (8, 512)
