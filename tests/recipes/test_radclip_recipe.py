"""The RadCLIP volume recipe: attention and mean slice pooling, zero-shot with negatives, retrieval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biomodal.errors import ConfigError
from biomodal.recipes import load, load_recipe, run
from biomodal.recipes.families import get_family
from biomodal.recipes.schema import SHIPPED_DIR

RECIPE = SHIPPED_DIR / "clinical" / "radclip_volume.yaml"
SHORT = [
    "data.volumes={n_train: 48, n_val: 16, n_test: 32, depth: 8, px: 24}",
    "modalities.volume.params.slice_params={in_chans: 1, tile_px: 24, channels: [8, 16]}",
    "trainer.max_steps=3",
    "trainer.batch_size=16",
    "trainer.val_every=2",
    "trainer.warmup_steps=0",
    "model.embed_dim=16",
]


def test_prepared_volumes():
    rec = load_recipe(RECIPE, SHORT)
    p = get_family("clinical").prepare(rec, Path("."))
    assert {s: len(d) for s, d in p.eval_datasets.items()} == {"train": 48, "val": 16, "test": 32}
    item = p.eval_datasets["train"][0]
    assert tuple(item["volume"].shape) == (1, 8, 24, 24) and str(item["volume"].dtype) == "torch.uint8"
    assert isinstance(item["report"], str) and p.targets["findings"].names == [
        "nodule",
        "cyst",
        "calcification",
    ]
    assert p.input_specs["volume"] == {"in_chans": 1}


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_short_run_each_pooling(pooling, tmp_path):
    out = tmp_path / pooling
    m = run(RECIPE, overrides=[*SHORT, f"modalities.volume.params.pooling={pooling}"], out=out)
    assert "errors" not in m and m["zero_shot"]["negatives"] == ["calcification", "cyst", "nodule"]
    assert set(m["zero_shot"]["per_class"]) == {"nodule", "cyst", "calcification"}
    r = m["retrieval"]["volume_to_report"]
    assert r["n"] == 32 and r["chance@1"] == pytest.approx(1 / 32)
    model = load(out / "model.pt")
    assert model.encoders["volume"].pool.pooling == pooling
    from biomodal.eval import embed

    prepared = model.family.prepare(model.recipe, tmp_path, preprocessors=model.preprocessors)
    emb = embed(model, prepared.eval_datasets["test"], progress=False)
    assert emb["volume"].shape == (32, 16) and np.isfinite(emb["volume"]).all()


def test_unknown_modality_is_named(tmp_path):
    rec = load_recipe(RECIPE, [*SHORT, "modalities.xray={encoder: cnn_small}"])
    with pytest.raises(ConfigError, match="xray"):
        get_family("clinical").prepare(rec, tmp_path)
