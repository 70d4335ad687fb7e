"""CBAM network, preprocessing, augmentation and balancing on tiny synthetic inputs (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.cnn.augment import Augment, elastic, flip_rot90
from fusion.cnn.balance import balanced_indices, class_weights
from fusion.cnn.cbam import CBAM
from fusion.cnn.preprocess import Preprocessor
from fusion.cnn.resnet import CBAMNet
from profiler.errors import ConfigError, InputError


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_output_shapes_and_head_widths():
    net = CBAMNet("resnet18", in_chans=3, n_classes=5).eval()
    x = torch.rand(2, 3, 32, 32)
    assert net(x).shape == (2, 5)
    assert net.features(x).shape == (2, 512)
    lin = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(512, 1024), (1024, 512), (512, 5)]
    bns = [m for m in net.neck if isinstance(m, torch.nn.BatchNorm1d)]
    assert [b.num_features for b in bns] == [1024, 512]


def test_cbam_after_every_stage_in_order():
    net = CBAMNet("resnet10t", in_chans=4, n_classes=3).eval()
    assert net.stage_names == ["layer1", "layer2", "layer3", "layer4"]
    calls = []
    for name, mod in net.cbam.items():
        assert isinstance(mod, CBAM)
        mod.register_forward_hook(lambda m, i, o, name=name: calls.append((name, i[0].shape[1], o)))
    stage_out = {}
    for name in net.stage_names:
        net.backbone.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: stage_out.__setitem__(name, o))
    net(torch.rand(1, 4, 32, 32))
    assert [c[0] for c in calls] == ["layer1", "layer2", "layer3", "layer4"]
    assert [c[1] for c in calls] == [64, 128, 256, 512]
    # what each stage hands to the next is CBAM's output
    for name, _, out in calls:
        assert torch.equal(stage_out[name], out)


def test_cbam_channel_then_spatial():
    torch.manual_seed(0)
    cb = CBAM(8, reduction=2).eval()
    x = torch.rand(2, 8, 6, 6)
    expected = cb.spatial(cb.channel(x))
    assert torch.equal(cb(x), expected)
    assert not torch.allclose(cb(x), cb.channel(cb.spatial(x)))


def test_dropout_schedule_is_a_parameter():
    net = CBAMNet("resnet10t", 3, 4)
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.3, 0.1]
    net = CBAMNet("resnet10t", 3, 4, dropouts=(0.4, 0.2, 0.05))
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.4, 0.2, 0.05]
    with pytest.raises(ConfigError, match="3 values"):
        CBAMNet("resnet10t", 3, 4, dropouts=(0.5, 0.3))
    with pytest.raises(ConfigError, match="no model named"):
        CBAMNet("not_a_model_xyz", 3, 4)


def test_local_safetensors_backbone_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    ref = timm.create_model("resnet10t", pretrained=False, in_chans=3)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    net = CBAMNet("resnet10t", 3, 2, pretrained_path=tmp_path / "w.safetensors")
    assert torch.equal(net.backbone.conv1[0].weight, ref.conv1[0].weight)
    from profiler.errors import ModelFileError
    with pytest.raises(ModelFileError):
        CBAMNet("resnet10t", 3, 2, pretrained_path=tmp_path / "missing.safetensors")


def test_preprocess_percentiles_resize_and_filters():
    rng = np.random.default_rng(0)
    x = rng.integers(100, 5000, size=(6, 20, 20, 2)).astype(np.uint16)
    pre = Preprocessor(image_size=32).fit(x)
    t = pre.transform(x)
    assert t.shape == (6, 2, 32, 32) and t.dtype == torch.float32
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    assert pre.transform(x, resize=False).shape == (6, 2, 20, 20)
    img = Preprocessor(image_size=20, scope="image", clahe=True, denoise_sigma=1.0).fit(x).transform(x)
    plain = Preprocessor(image_size=20, scope="image").fit(x).transform(x)
    assert img.shape == plain.shape and not torch.allclose(img, plain)
    assert Preprocessor.from_dict(pre.to_dict()).lo_ == pre.lo_
    with pytest.raises(InputError):
        pre.transform(x[..., :1])
    with pytest.raises(ConfigError):
        Preprocessor(scope="plate")


def test_augment_seeded_and_shape_preserving():
    x = torch.rand(8, 3, 16, 16)
    aug = Augment(elastic_p=1.0, erase_p=1.0)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    # flips/rot90 permute pixels: per-image sums are kept
    f = flip_rot90(x, torch.Generator().manual_seed(0))
    assert torch.allclose(f.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-4)
    e = elastic(x, torch.Generator().manual_seed(0), 1.0, 0.1, 4)
    assert e.shape == x.shape and not torch.allclose(e, x)
    assert Augment.from_dict(aug.to_dict()) == aug


def test_balancing():
    y = np.array([0] * 100 + [1] * 10 + [2] * 3)
    idx = balanced_indices(y, target_per_class=20, seed=0)
    assert np.bincount(y[idx]).tolist() == [20, 20, 20]
    assert set(np.flatnonzero(y == 1)) <= set(idx)  # every rare cell is kept
    assert np.array_equal(idx, balanced_indices(y, target_per_class=20, seed=0))
    w = class_weights(y, 4)
    assert w[3] == 0 and w[2] > w[1] > w[0]
    assert np.isclose((w[y]).sum(), len(y))
