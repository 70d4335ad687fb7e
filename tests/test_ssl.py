"""Self-supervised crop embeddings (fusion.cnn.ssl): SimCLR and the convolutional autoencoder on tiny
synthetic crops (CPU, about a minute in all), the SSL augmentations, files and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from fusion.cnn.augment import SIMCLR, Augment, gaussian_blur, random_resized_crop
from fusion.cnn.ssl import SSLEmbedder, embed_tensor, is_ssl_model, nt_xent
from cellfusion_core.errors import ConfigError, ModelFileError

SIZE = 32
SMALL = dict(backbone="resnet10t", image_size=SIZE, batch_size=32, device="cpu", seed=0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def synthetic_crops(n: int = 96, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint16: 1–3 Gaussian blobs per crop at random places, sizes and colours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, 3), np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(6, size - 6, 2)
            r = rng.uniform(2, 6)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            out[i] += blob[..., None] * rng.uniform(0.2, 1, 3)
        out[i] += rng.normal(0, 0.02, (size, size, 3))
    return (np.clip(out, 0, None) * 1000).astype(np.uint16)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return synthetic_crops()


def view_gap(est: SSLEmbedder, X: np.ndarray, seed: int = 5) -> float:
    """Mean cosine similarity of two augmented views of the same crop minus that of different crops."""
    gen = torch.Generator().manual_seed(seed)
    xt = est.preprocessor_.transform(X)
    aug = Augment.from_dict(SIMCLR.to_dict())
    e1 = embed_tensor(est.model_, aug(xt, gen), None)
    e2 = embed_tensor(est.model_, aug(xt, gen), None)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    sim = e1 @ e2.T
    off = ~np.eye(len(sim), dtype=bool)
    return float(np.diag(sim).mean() - sim[off].mean())


@pytest.fixture(scope="module")
def simclr_pair(crops):
    untrained = SSLEmbedder(method="simclr", epochs=0, **SMALL).fit(crops)
    trained = SSLEmbedder(method="simclr", epochs=8, **SMALL).fit(crops)
    return untrained, trained


# ------------------------------------------------------------------------------------------ loss


def test_nt_xent_prefers_aligned_views():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    aligned = nt_xent(z, z + 0.01 * torch.randn(16, 8), 0.2)
    shuffled = nt_xent(z, z[torch.randperm(16)], 0.2)
    assert aligned < shuffled
    # one-hot, orthogonal pairs at a low temperature: the positive wins every row
    eye = torch.eye(8)
    assert float(nt_xent(eye, eye, 0.05)) < 1e-6
    # uniform similarities: loss = log(2B - 1)
    same = torch.ones(4, 3)
    assert float(nt_xent(same, same, 1.0)) == pytest.approx(np.log(7), abs=1e-5)
    with pytest.raises(ValueError):
        nt_xent(torch.zeros(3, 2), torch.zeros(4, 2))


# ------------------------------------------------------------------------------------------ SimCLR


def test_simclr_loss_decreases(simclr_pair):
    _, trained = simclr_pair
    losses = [h["loss"] for h in trained.history_]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0] - 0.3, losses


def test_simclr_views_of_one_crop_closer_than_different_crops(simclr_pair, crops):
    untrained, trained = simclr_pair
    gap0, gap1 = view_gap(untrained, crops), view_gap(trained, crops)
    assert gap1 > 0.1, gap1
    # training (not the architecture alone) makes the views closer: the gap grows over the random floor
    assert gap1 > gap0 + 0.05, (gap0, gap1)
    assert untrained.history_ == []


def test_simclr_embedding_is_backbone_width(simclr_pair, crops):
    _, trained = simclr_pair
    emb = trained.embed(crops[:5])
    assert emb.shape == (5, 512) and emb.dtype == np.float32  # resnet10t's pooled features
    np.testing.assert_array_equal(emb, trained.transform(crops[:5]))


def test_training_is_seeded(crops):
    a = SSLEmbedder(method="simclr", epochs=1, **SMALL).fit(crops[:64])
    b = SSLEmbedder(method="simclr", epochs=1, **SMALL).fit(crops[:64])
    assert a.history_ == b.history_
    np.testing.assert_array_equal(a.embed(crops[:8]), b.embed(crops[:8]))


# ------------------------------------------------------------------------------------------ autoencoder


def test_autoencoder_reconstruction_error_decreases(crops):
    untrained = SSLEmbedder(method="autoencoder", epochs=0, latent_dim=32, **SMALL).fit(crops)
    trained = SSLEmbedder(method="autoencoder", epochs=6, latent_dim=32, **SMALL).fit(crops)
    losses = [h["loss"] for h in trained.history_]
    assert losses[-1] < losses[0], losses
    e0, e1 = untrained.reconstruction_error(crops), trained.reconstruction_error(crops)
    assert e1 < 0.75 * e0, (e0, e1)
    emb = trained.embed(crops[:4])
    assert emb.shape == (4, 32)
    with torch.no_grad():
        rec = trained.model_(trained.preprocessor_.transform(crops[:4]))
    assert rec.shape == (4, 3, SIZE, SIZE) and float(rec.min()) >= 0 and float(rec.max()) <= 1
    with pytest.raises(ConfigError):
        SSLEmbedder(method="simclr").reconstruction_error(crops)


# ------------------------------------------------------------------------------------------ files


def test_save_load_embed_round_trip_identical(simclr_pair, crops, tmp_path):
    _, trained = simclr_pair
    before = trained.embed(crops)
    trained.save(tmp_path / "m")
    assert is_ssl_model(tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["manifest.json", "ssl.json", "ssl.safetensors"]
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["kind"] == "ssl" and manifest["method"] == "simclr"
    assert set(manifest["model_files"]) == {"ssl.json", "ssl.safetensors"}
    loaded = SSLEmbedder.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.embed(crops), before)
    assert loaded.get_params() == trained.get_params()
    assert loaded.history_ == trained.history_


def test_load_refuses_modified_weights(simclr_pair, tmp_path):
    _, trained = simclr_pair
    trained.save(tmp_path / "m")
    w = tmp_path / "m" / "ssl.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256"):
        SSLEmbedder.load(tmp_path / "m")


def test_bad_settings_are_config_errors(crops):
    with pytest.raises(ConfigError, match="unknown self-supervised method"):
        SSLEmbedder(method="byol").fit(crops)
    with pytest.raises(ConfigError, match="batch_size"):
        SSLEmbedder(batch_size=1).fit(crops)
    with pytest.raises(ConfigError, match="not fitted"):
        SSLEmbedder().embed(crops)


# ------------------------------------------------------------------------------------------ augmentation


def test_random_resized_crop_and_blur():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 24, 24)
    torch.testing.assert_close(random_resized_crop(x, gen, 1.0, (1.0, 1.0), (1.0, 1.0)), x)
    torch.testing.assert_close(random_resized_crop(x, gen, 0.0, (0.3, 0.5), (0.75, 1.33)), x)
    zoomed = random_resized_crop(x, gen, 1.0, (0.2, 0.3), (1.0, 1.0))
    assert zoomed.shape == x.shape and not torch.allclose(zoomed, x)
    assert torch.equal(gaussian_blur(x, gen, 0.0, (0.5, 1.5)), x)
    blurred = gaussian_blur(x, gen, 1.0, (1.0, 1.5))
    assert blurred.std() < 0.5 * x.std()                         # white noise loses most of its variance
    assert float(blurred.mean()) == pytest.approx(float(x.mean()), abs=0.02)  # a blur keeps the mean
    const = torch.full((2, 3, 16, 16), 0.7)
    torch.testing.assert_close(gaussian_blur(const, gen, 1.0, (0.5, 1.5)), const)
    a = Augment.from_dict(SIMCLR.to_dict())
    assert a == SIMCLR
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(a(x, g1), a(x, g2))


def test_default_augment_unchanged_by_new_options():
    # the supervised recipe's default draws no crop and no blur
    d = Augment().to_dict()
    assert d["crop_p"] == 0 and d["blur_p"] == 0
    old = {k: v for k, v in d.items() if not k.startswith(("crop", "blur"))}
    assert Augment.from_dict(old) == Augment()  # configs saved before the options existed still load


# ------------------------------------------------------------------------------------------ CLI


def _crop_folder(tmp_path: Path, crops: np.ndarray) -> Path:
    folder = tmp_path / "crops"
    folder.mkdir()
    tifffile.imwrite(folder / "crops.tif", crops, photometric="minisblack")
    n = len(crops)
    pd.DataFrame({"Metadata_Plate": "P1", "Metadata_Well": [f"B{(i % 4) + 2:02d}" for i in range(n)],
                  "Metadata_Compound": ["c" + str(i % 4) for i in range(n)]}).to_parquet(folder / "crops.parquet")
    return folder


def test_cli_train_ssl_then_embed(tmp_path, crops):
    from typer.testing import CliRunner

    from fusion.cli import app

    folder = _crop_folder(tmp_path, crops[:48])
    model = tmp_path / "model"
    runner = CliRunner()
    res = runner.invoke(app, ["train-ssl", str(folder), "-o", str(model), "--method", "autoencoder",
                              "--backbone", "resnet10t", "--image-size", str(SIZE), "--epochs", "1",
                              "--batch-size", "16", "--latent-dim", "8", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert is_ssl_model(model)
    out = tmp_path / "emb.parquet"
    res = runner.invoke(app, ["embed", str(model), str(folder), "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out)
    assert len(table) == 4  # four wells
    assert [c for c in table.columns if c.startswith("Embedding_")] == [f"Embedding_{i}" for i in range(8)]
    assert table["Metadata_Object_Count"].tolist() == [12] * 4
    per_cell = tmp_path / "cells.parquet"
    res = runner.invoke(app, ["embed", str(model), str(folder), "-o", str(per_cell), "--aggregate", "none"])
    assert res.exit_code == 0, res.output
    cells = pd.read_parquet(per_cell)
    assert len(cells) == 48
    emb_cols = [f"Embedding_{i}" for i in range(8)]
    mean = cells.groupby("Metadata_Well")[emb_cols].mean().sort_index()
    np.testing.assert_allclose(table.set_index("Metadata_Well")[emb_cols].sort_index().to_numpy(), mean.to_numpy(),
                               rtol=1e-5, atol=1e-6)


def test_cli_unknown_method_is_one_error_line(tmp_path, crops):
    folder = _crop_folder(tmp_path, crops[:8])
    res = subprocess.run([sys.executable, "-c", "from fusion.cli import main; main()", "train-ssl", str(folder),
                          "-o", str(tmp_path / "m"), "--method", "byol"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "error:" in res.stderr and "byol" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "m").exists()
