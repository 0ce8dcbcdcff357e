from __future__ import annotations

import pytest
import torch
from torch import nn

from biomodal.errors import CheckpointError, ConfigError
from biomodal.nn import create_encoder


def test_cnn_small_shapes_and_projection():
    enc = create_encoder("cnn_small", channels=(8, 16, 32), out_dim=10).eval()
    for px in (64, 112):
        assert enc(torch.randn(2, 3, px, px)).shape == (2, 10)
    assert enc.spec.input_shape == {"tile_px": 112, "in_chans": 3}


def test_cnn_small_groupnorm_is_batch_independent():
    enc = create_encoder("cnn_small", channels=(8, 16), norm="group").train()
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(enc(x)[1], enc(x[1:2])[0], atol=1e-5)
    with pytest.raises(ConfigError, match="norm"):
        create_encoder("cnn_small", norm="instance")


def test_vit_tiny_attention_matches_torch_mha():
    enc = create_encoder("vit_tiny", img_size=32, patch_size=8, dim=32, depth=1, heads=4).eval()
    attn = enc.blocks[0].attn
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
        x = torch.randn(2, 5, 32)
        assert torch.allclose(attn(x), mha(x, x, x, need_weights=False)[0], atol=1e-5)


def test_vit_tiny_sizes_and_pooling():
    enc = create_encoder("vit_tiny", img_size=32, patch_size=8, dim=32, depth=2, heads=2, pool="mean").eval()
    assert enc._pos(4, 4) is enc.pos_embed
    assert enc(torch.randn(2, 3, 48, 40)).shape == (2, 32)  # interpolated position embeddings
    with pytest.raises(ConfigError, match="multiple of 8"):
        enc(torch.randn(1, 3, 30, 30))
    with pytest.raises(ConfigError, match="divisible"):
        create_encoder("vit_tiny", dim=30, heads=4)


def test_vit_tiny_local_weights_roundtrip(tmp_path):
    a = create_encoder("vit_tiny", img_size=32, patch_size=8, dim=32, depth=1, heads=2).eval()
    torch.save(a.state_dict(), tmp_path / "vit.pt")
    b = create_encoder(
        "vit_tiny", img_size=32, patch_size=8, dim=32, depth=1, heads=2, pretrained_path=tmp_path / "vit.pt"
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    with pytest.raises(CheckpointError, match="missing keys"):
        create_encoder(
            "vit_tiny",
            img_size=32,
            patch_size=8,
            dim=32,
            depth=2,
            heads=2,
            pretrained_path=tmp_path / "vit.pt",
        )


def test_torchvision_resnet_local_checkpoint(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = tv.models.resnet18(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")  # includes the fc classifier
    enc = create_encoder("torchvision:resnet18", weights=str(tmp_path / "r18.pth")).eval()
    ref.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc(x), ref(x))
    assert enc.out_dim == 512 and enc.spec.weights == str((tmp_path / "r18.pth").resolve())
    gray = create_encoder("torchvision:resnet18", in_chans=1).eval()
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 512) and gray.spec.input_shape["in_chans"] == 1


def test_monai_resnet_3d_volume():
    pytest.importorskip("monai")
    enc = create_encoder("monai:resnet10", spatial_dims=3, in_chans=1).eval()
    assert enc(torch.randn(2, 1, 16, 16, 16)).shape == (2, enc.out_dim) == (2, 512)
    assert (enc.spec.modality, enc.spec.input_kind) == ("volume", "volume")
    with pytest.raises(ConfigError, match="spatial_dims"):
        create_encoder("monai:resnet10", spatial_dims=4)
