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
from cellfusion_core.errors import ConfigError, InputError


pytestmark = pytest.mark.usefixtures("torch_one_thread")


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
    from cellfusion_core.errors import ModelFileError
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
    assert img.shape == (6, 2, 20, 20) and float(img.min()) >= 0 and float(img.max()) <= 1
    assert Preprocessor.from_dict(pre.to_dict()).lo_ == pre.lo_
    with pytest.raises(InputError):
        pre.transform(x[..., :1])
    with pytest.raises(ConfigError):
        Preprocessor(scope="plate")


def _reference_crops() -> np.ndarray:
    """Crops spanning 0 … 1000: fitted percentiles map about 10 → 0 and 998 → 1."""
    return np.random.default_rng(0).integers(0, 1001, size=(4, 32, 32, 1)).astype(np.uint16)


def _low_contrast(n=3, side=64, seed=0) -> np.ndarray:
    """Smooth texture in 450 … 550: a tenth of the fitted range, i.e. 0.45 … 0.55 after scaling."""
    from scipy.ndimage import gaussian_filter

    tex = gaussian_filter(np.random.default_rng(seed).normal(size=(n, side, side)), (0, 2, 2))
    return (500 + 50 * tex / np.abs(tex).max())[..., None].astype(np.float32)


def test_clahe_spreads_a_low_contrast_crop_and_keeps_its_order():
    from scipy.stats import spearmanr

    ref, x = _reference_crops(), _low_contrast()
    plain = Preprocessor(image_size=64).fit(ref).transform(x).numpy()
    eq = Preprocessor(image_size=64, clahe=True).fit(ref).transform(x).numpy()
    assert eq.shape == plain.shape and eq.min() >= 0 and eq.max() <= 1
    for p, e in zip(plain, eq):
        # contrast: the values used span (almost) the whole range instead of a tenth of it
        assert e.std() > 5 * p.std(), (e.std(), p.std())
        occupied = [np.count_nonzero(np.histogram(v, bins=20, range=(0, 1))[0]) for v in (p, e)]
        assert occupied[0] <= 4 and occupied[1] >= 15, occupied
        # equalization maps each tile monotonically: brighter pixels stay (mostly) brighter
        assert spearmanr(p.ravel(), e.ravel())[0] > 0.8
    # a horizontal ramp stays a non-decreasing ramp, stretched, and constant down each column
    ramp = np.tile(np.linspace(450, 550, 64, dtype=np.float32), (64, 1))[None, ..., None]
    r = Preprocessor(image_size=64, clahe=True).fit(ref).transform(ramp).numpy()[0, 0]
    r0 = Preprocessor(image_size=64).fit(ref).transform(ramp).numpy()[0, 0]
    assert np.diff(r, axis=1).min() >= 0
    assert np.ptp(r) > 3 * np.ptp(r0)
    assert np.abs(r - r[:1]).max() < 1e-5


def test_denoise_smooths_noise_and_keeps_the_mean():
    x = np.random.default_rng(1).uniform(400, 600, size=(2, 48, 48, 1)).astype(np.float32)
    ref = _reference_crops()
    plain = Preprocessor(image_size=48).fit(ref).transform(x)
    smooth = Preprocessor(image_size=48, denoise_sigma=1.0).fit(ref).transform(x)
    assert float(smooth.std()) < 0.5 * float(plain.std())
    torch.testing.assert_close(smooth.mean((1, 2, 3)), plain.mean((1, 2, 3)), atol=2e-3, rtol=0)


def _smooth_images(n=8, side=64, seed=3) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    sm = gaussian_filter(np.random.default_rng(seed).random((n, 1, side, side)), (0, 0, 3, 3))
    return torch.from_numpy(0.2 + 0.6 * (sm - sm.min()) / (sm.max() - sm.min())).float()


def test_elastic_is_a_smooth_bounded_seeded_displacement():
    side, alpha = 64, 0.06
    # a coordinate image: bilinear sampling of a linear function returns the sampled position, so
    # (output - input) is the displacement field in pixels (channel 0: x, channel 1: y)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    coords = torch.from_numpy(np.stack([xx, yy, xx])[None].repeat(4, 0))
    e = elastic(coords, torch.Generator().manual_seed(0), 1.0, alpha, 4)
    assert e.shape == coords.shape
    disp = (e - coords)[:, :2]
    inner = disp[:, :, 8:-8, 8:-8]                  # away from the reflected border
    limit = 2 * alpha * (side - 1) / 2              # the coarse field's amplitude, in pixels
    assert 0.5 * limit < float(inner.abs().max()) < 1.5 * limit
    # smooth: neighbouring pixels move alike (a per-pixel random field would differ by ~limit)
    assert float(inner.diff(dim=-1).abs().max()) < 1.0 and float(inner.diff(dim=-2).abs().max()) < 1.0
    assert torch.equal(e[:, 0], e[:, 2])            # one field per image, the same for every channel
    # zero strength is the identity; the seed decides the field
    torch.testing.assert_close(elastic(coords, torch.Generator().manual_seed(0), 1.0, 0.0, 4), coords,
                               atol=1e-4, rtol=0)
    assert torch.equal(e, elastic(coords, torch.Generator().manual_seed(0), 1.0, alpha, 4))
    assert not torch.allclose(e, elastic(coords, torch.Generator().manual_seed(1), 1.0, alpha, 4))
    # on a smooth image the pixel values are moved, not changed: range, mean and quantiles kept
    sm = _smooth_images()
    es = elastic(sm, torch.Generator().manual_seed(3), 1.0, alpha, 4)
    assert float(es.min()) >= float(sm.min()) - 1e-6 and float(es.max()) <= float(sm.max()) + 1e-6
    torch.testing.assert_close(es.mean((1, 2, 3)), sm.mean((1, 2, 3)), atol=0.02, rtol=0)
    q = torch.linspace(0.05, 0.95, 19)
    assert float((torch.quantile(es.flatten(1), q, dim=1) - torch.quantile(sm.flatten(1), q, dim=1)).abs().max()) < 0.03
    # p is the share of images deformed; the others come back unchanged
    many = sm.repeat(8, 1, 1, 1)
    out = elastic(many, torch.Generator().manual_seed(0), 0.5, alpha, 4)
    changed = (out - many).abs().flatten(1).amax(1) > 1e-4
    assert 0.25 < float(changed.float().mean()) < 0.75


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
