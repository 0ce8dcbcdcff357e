from __future__ import annotations

import pytest
import torch

from biomodal.errors import CheckpointError, ConfigError
from biomodal.nn import create_encoder
from biomodal.nn.timm_encoders import load_state_dict_file

timm = pytest.importorskip("timm")

TINY = dict(img_size=32, patch_size=8, depth=2)


class _Thing:
    """An arbitrary object: not loadable with weights_only=True."""


def _tiny_vit(**kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", **{**TINY, "num_classes": 0, **kw}).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_roundtrip_local_checkpoint(tmp_path, suffix):
    ref = _tiny_vit()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(ref.state_dict(), str(path))
    else:
        torch.save(ref.state_dict(), path)
    enc = create_encoder("timm:vit_tiny_patch16_224", pretrained_path=str(path), **TINY).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc(x), ref(x))
    assert enc.out_dim == 192
    assert enc.spec.weights == str(path.resolve())
    assert enc.spec.mean == (0.5, 0.5, 0.5) and enc.spec.input_shape == {"tile_px": 32, "in_chans": 3}
    assert enc.spec.config["pretrained_path"] == str(path)
    # rebuilding from the spec reloads the same weights
    with torch.no_grad():
        assert torch.equal(enc.spec.build().eval()(x), ref(x))


def test_classifier_keys_dropped_and_wrappers_unwrapped(tmp_path):
    ref = _tiny_vit(num_classes=7)
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    enc = create_encoder("timm:vit_tiny_patch16_224", pretrained_path=tmp_path / "ckpt.pth", **TINY).eval()
    assert enc.spec.config["pretrained_path"] == str(tmp_path / "ckpt.pth")  # Path stored as str (YAML-safe)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc(x), ref.forward_head(ref.forward_features(x), pre_logits=True))


def test_strict_key_check_lists_keys(tmp_path):
    torch.save(_tiny_vit().state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: .*blocks\.2\.") as info:
        create_encoder(
            "timm:vit_tiny_patch16_224",
            pretrained_path=tmp_path / "w.pth",
            img_size=32,
            patch_size=8,
            depth=3,
        )
    assert str(tmp_path / "w.pth") in str(info.value)
    with pytest.raises(CheckpointError, match=r"unexpected keys: .*blocks\.1\."):
        create_encoder(
            "timm:vit_tiny_patch16_224",
            pretrained_path=tmp_path / "w.pth",
            img_size=32,
            patch_size=8,
            depth=1,
        )
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*pos_embed"):
        create_encoder(
            "timm:vit_tiny_patch16_224",
            pretrained_path=tmp_path / "w.pth",
            img_size=64,
            patch_size=8,
            depth=2,
        )
    # strict=False tolerates missing/unexpected keys (never shape mismatches)
    enc = create_encoder(
        "timm:vit_tiny_patch16_224",
        pretrained_path=tmp_path / "w.pth",
        img_size=32,
        patch_size=8,
        depth=3,
        strict=False,
    )
    assert enc.out_dim == 192


def test_unsafe_or_missing_files(tmp_path):
    torch.save({"obj": _Thing(), "w": torch.zeros(1)}, tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state_dict_file(tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match="not found"):
        create_encoder("timm:resnet10t", pretrained_path=tmp_path / "nope.safetensors")
    torch.save({"teacher": {"backbone.w": torch.ones(2)}}, tmp_path / "dino.pth")
    state = load_state_dict_file(tmp_path / "dino.pth", checkpoint_key="teacher", strip_prefix="backbone.")
    assert list(state) == ["w"]
    with pytest.raises(CheckpointError, match="checkpoint_key 'student'"):
        load_state_dict_file(tmp_path / "dino.pth", checkpoint_key="student")


def test_pool_options_and_registers():
    torch.manual_seed(0)
    kw = dict(TINY, reg_tokens=2)
    enc = create_encoder("timm:vit_tiny_patch16_224", pool="cls+mean", **kw).eval()
    assert enc.out_dim == 384
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = enc(x)
        tokens = enc.model.forward_features(x)  # [B, 1 cls + 2 registers + 16 patches, 192]
    assert tokens.shape[1] == 19
    assert torch.allclose(y[:, :192], tokens[:, 0])
    assert torch.allclose(y[:, 192:], tokens[:, 3:].mean(1))
    with pytest.raises(ConfigError, match="pool"):
        create_encoder("timm:resnet10t", pool="cls")
    with pytest.raises(ConfigError, match="either pretrained=True"):
        create_encoder("timm:resnet10t", pretrained=True, pretrained_path="x.pth")


def test_layer_strings_resolve_and_are_restricted():
    enc = create_encoder("timm:vit_tiny_patch16_224", act_layer="torch.nn.SiLU", **TINY)
    assert isinstance(enc.model.blocks[0].mlp.act, torch.nn.SiLU)
    with pytest.raises(ConfigError, match="only timm"):
        create_encoder("timm:vit_tiny_patch16_224", act_layer="os.system", **TINY)
