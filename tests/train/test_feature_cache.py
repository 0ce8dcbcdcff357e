"""The frozen-encoder feature cache: exact, invalidated by any change, never half-written."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from biomodal.data import SpotTileDataset
from biomodal.data.transforms import default_histology_transforms
from biomodal.errors import DataError
from biomodal.eval import embed
from biomodal.losses import get_loss
from biomodal.nn import create_encoder
from biomodal.train import ContrastiveModel, TrainConfig, Trainer
from biomodal.train import feature_cache as fc


@pytest.fixture(scope="module")
def spots(demo_dataset) -> SpotTileDataset:
    return SpotTileDataset(demo_dataset, tile_um=32.0, mpp=1.0)


def _model(spots: SpotTileDataset, seed: int = 0) -> ContrastiveModel:
    torch.manual_seed(seed)
    encoders = {
        "histology": create_encoder("cnn_small", channels=[8, 16, 16, 16]),
        "expression": create_encoder("mlp", in_features=spots.expression.shape[1], hidden=[32], out_dim=16),
    }
    model = ContrastiveModel(encoders, get_loss("clip"), embed_dim=8)
    return model.freeze("histology")


def _fit(model, data, out, steps: int = 8) -> list[float]:
    cfg = TrainConfig(max_steps=steps, batch_size=16, warmup_steps=1, log_every=1, seed=3, progress=False,
                      ckpt_every=100)  # fmt: skip
    trainer = Trainer(model, cfg, out, train_data=data)
    trainer.fit()
    return [float(r["loss"]) for r in trainer.history]


def test_cached_training_matches_uncached(spots, tmp_path):
    plain, cached_model = _model(spots), _model(spots)
    (cached,), skipped = (lambda d: (list(d[0].values()), d[1]))(
        fc.with_feature_cache(cached_model, {"train": spots}, cache_dir=tmp_path / "cache")
    )
    assert isinstance(cached, fc.CachedFeatureDataset) and not skipped
    item = cached[3]
    width = cached_model.encoders["histology"].out_dim
    assert "histology" not in item and item["histology_features"].shape == (width,)
    torch.testing.assert_close(item["expression"], spots[3]["expression"])

    loss_plain = _fit(plain, spots, tmp_path / "plain")
    loss_cached = _fit(cached_model, cached, tmp_path / "cached")
    assert len(loss_plain) == len(loss_cached) >= 8
    np.testing.assert_allclose(loss_cached, loss_plain, rtol=1e-4, atol=1e-5)

    a = embed(plain, spots, progress=False)
    b = embed(cached_model, cached, progress=False)
    for m in ("histology", "expression"):
        np.testing.assert_allclose(b[m], a[m], rtol=1e-4, atol=1e-5)


def test_features_equal_the_encoder_output(spots, tmp_path):
    model = _model(spots)
    enc = model.encoders["histology"]
    feats = fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path, batch_size=7)
    x = torch.stack([spots[i]["histology"] for i in range(5)])
    with torch.no_grad():
        ref = model.encoders["histology"](x).numpy()
    np.testing.assert_allclose(feats[:5], ref, rtol=1e-4, atol=1e-5)
    # a second call reads the file written by the first (memory-mapped, no encoder pass)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    again = fc.frozen_features(model.encoders["histology"], spots, "histology", cache_dir=tmp_path)
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(np.asarray(again), feats)


def _keys(tmp_path) -> set[str]:
    return {p.stem for p in tmp_path.glob("*.json")}


def test_changed_weights_preprocessing_or_input_invalidate(spots, demo_dataset, tmp_path):
    model = _model(spots)
    enc = model.encoders["histology"]
    fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path)
    assert len(_keys(tmp_path)) == 1
    with torch.no_grad():  # other weights
        next(enc.parameters()).add_(0.01)
    fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path)
    assert len(_keys(tmp_path)) == 2
    enc.spec.mean, enc.spec.std = (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)  # other input normalisation
    fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path)
    assert len(_keys(tmp_path)) == 3
    other_tiles = SpotTileDataset(demo_dataset, tile_um=32.0, tile_px=16)  # other preprocessing
    fc.frozen_features(enc, other_tiles, "histology", cache_dir=tmp_path)
    assert len(_keys(tmp_path)) == 4
    slide = spots._slide_paths[0]  # the same path, rewritten: other content
    st = os.stat(slide)
    try:
        os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        fc.frozen_features(enc, SpotTileDataset(demo_dataset, tile_um=32.0, mpp=1.0), "histology",
                           cache_dir=tmp_path)  # fmt: skip
    finally:
        os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(_keys(tmp_path)) == 5


def test_crash_mid_write_leaves_no_complete_cache(spots, tmp_path, monkeypatch):
    enc = _model(spots).encoders["histology"]

    def broken_save(path, arr):
        with open(path, "wb") as fh:
            fh.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(fc.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither features nor the JSON that marks them complete
    monkeypatch.undo()
    feats = fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path)
    assert feats.shape[0] == len(spots) and len(_keys(tmp_path)) == 1


def test_truncated_cache_file_is_recomputed(spots, tmp_path):
    enc = _model(spots).encoders["histology"]
    ref = np.array(fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path))
    npy = next(tmp_path.glob("*.npy"))
    npy.write_bytes(npy.read_bytes()[:200])
    again = fc.frozen_features(enc, spots, "histology", cache_dir=tmp_path)
    np.testing.assert_allclose(np.asarray(again), ref, rtol=1e-6)


def test_eligibility(spots, demo_dataset):
    model = _model(spots)
    assert fc.cache_eligibility(model, "histology", spots) is None
    assert "trainable" in fc.cache_eligibility(model, "expression", spots)
    augmented = SpotTileDataset(demo_dataset, tile_um=32.0, mpp=1.0,
                                transform=default_histology_transforms(train=True))  # fmt: skip
    assert "augmented" in fc.cache_eligibility(model, "histology", augmented)
    assert "feature_cache_key" in fc.cache_eligibility(model, "histology", list(range(3)))
    datasets, skipped = fc.with_feature_cache(model, {"train": augmented}, cache_dir=None)
    assert datasets["train"] is augmented and "augmented" in skipped["histology"]


def test_embed_refuses_features_of_another_encoder(spots, tmp_path):
    model = _model(spots)
    datasets, _ = fc.with_feature_cache(model, {"test": spots}, cache_dir=tmp_path)
    other = _model(spots, seed=1)
    with pytest.raises(DataError, match="another encoder"):
        embed(other, datasets["test"], progress=False)
    # the encoder-feature view returns the cached features as they are
    from biomodal.eval.backbone import encoder_features

    feats = encoder_features(model, datasets["test"], ["histology"])["histology"]
    np.testing.assert_allclose(feats, datasets["test"].features["histology"], rtol=1e-6)


def test_wrapper_forwards_dataset_attributes(spots, tmp_path):
    datasets, _ = fc.with_feature_cache(_model(spots), {"a": spots, "b": spots}, cache_dir=tmp_path)
    assert datasets["a"] is datasets["b"]  # one object under two splits is wrapped once
    w = datasets["a"]
    assert len(w) == len(spots) and w.obs is spots.obs
    np.testing.assert_array_equal(w.batch_codes, spots.batch_codes)
    assert "CachedFeatureDataset" in repr(w)
