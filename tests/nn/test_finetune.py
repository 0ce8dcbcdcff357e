from __future__ import annotations

import copy

import pytest
import torch

from biomodal.errors import ConfigError
from biomodal.nn import create_encoder
from biomodal.nn.finetune import apply_lora, count_parameters, find_blocks, freeze, unfreeze_last

pytest.importorskip("timm")


def _vit():
    torch.manual_seed(0)
    return create_encoder("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4).eval()


def _trainable(m):
    return {n for n, p in m.named_parameters() if p.requires_grad}


def test_freeze_with_patterns():
    enc = _vit()
    freeze(enc, except_patterns=("model.norm", "*.blocks.3.mlp.*"))
    names = _trainable(enc)
    assert names == {"model.norm.weight", "model.norm.bias"} | {
        f"model.blocks.3.mlp.fc{i}.{t}" for i in (1, 2) for t in ("weight", "bias")
    }
    freeze(enc)
    assert count_parameters(enc) == 0 and count_parameters(enc, trainable=False) > 0


def test_unfreeze_last_vit_blocks():
    enc = _vit()
    unfreeze_last(enc, 2)
    prefixes = {
        ".".join(n.split(".")[:3]) if ".blocks." in n else n.rsplit(".", 1)[0] for n in _trainable(enc)
    }
    assert prefixes == {"model.blocks.2", "model.blocks.3", "model.norm"}
    unfreeze_last(enc, 0)
    assert _trainable(enc) == {"model.norm.weight", "model.norm.bias"}
    unfreeze_last(enc, 10)
    assert "model.blocks.0.attn.qkv.weight" in _trainable(enc)
    assert "model.patch_embed.proj.weight" not in _trainable(enc) and "model.pos_embed" not in _trainable(enc)


def test_unfreeze_last_resnet_and_others():
    r18 = create_encoder("torchvision:resnet18")
    blocks = [n for n, _ in find_blocks(r18)]
    assert blocks == [f"model.layer{i}.{j}" for i in (1, 2, 3, 4) for j in (0, 1)]
    unfreeze_last(r18, 1)
    assert _trainable(r18) and all(n.startswith("model.layer4.1.") for n in _trainable(r18))
    cnn = create_encoder("cnn_small", channels=(4, 8, 8), out_dim=5)
    unfreeze_last(cnn, 1)
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in _trainable(cnn)} == {
        "blocks.2",
        "proj.weight",
        "proj.bias",
    }
    convnext = create_encoder("timm:convnext_atto")
    assert find_blocks(convnext)[-1][0] == "model.stages.3.blocks.1"
    with pytest.raises(ConfigError, match="cannot find repeated blocks"):
        unfreeze_last(create_encoder("mlp", in_features=5), 1)


def test_lora_only_adapters_trainable_and_identity_at_init():
    enc = _vit()
    base = copy.deepcopy(enc)
    x = torch.randn(2, 3, 32, 32)
    apply_lora(enc, r=4, alpha=8)
    names = _trainable(enc)
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    assert {n.split(".")[2] for n in names} == {"0", "1", "2", "3"} and all(".attn.qkv." in n for n in names)
    assert count_parameters(enc) == 4 * 4 * (192 + 3 * 192)
    with torch.no_grad():
        assert torch.allclose(enc(x), base(x), atol=1e-6)
    # one optimisation step moves the output but leaves base weights untouched
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    enc.train()
    enc(x).pow(2).sum().backward()
    opt.step()
    enc.eval()
    with torch.no_grad():
        assert not torch.allclose(enc(x), base(x), atol=1e-4)
    w = dict(enc.named_parameters())["model.blocks.0.attn.qkv.base_layer.weight"]
    assert torch.equal(w, base.model.blocks[0].attn.qkv.weight)
    assert enc.out_dim == 192 and enc.spec.name == "timm:vit_tiny_patch16_224" and enc.lora_config["r"] == 4


def test_lora_on_vit_tiny_and_errors():
    enc = create_encoder("vit_tiny", img_size=32, patch_size=8, dim=32, depth=2, heads=2)
    apply_lora(enc, r=2, except_patterns=("norm",))
    assert "norm.weight" in _trainable(enc)
    assert enc(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    with pytest.raises(ConfigError, match="target_modules"):
        apply_lora(create_encoder("mlp", in_features=5, hidden=(4,)))
