"""The model applies an encoder's recorded input normalisation (pretrained backbones need it)."""

from __future__ import annotations

import torch
from torch import nn

from biomodal.losses import get_loss
from biomodal.nn import EncoderSpec, create_encoder
from biomodal.train import ContrastiveModel


class _Recorder(nn.Module):
    def __init__(self, spec: EncoderSpec | None) -> None:
        super().__init__()
        self.out_dim = 3 * 4 * 4
        self.spec = spec
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x.flatten(1)


def _model(image_spec: EncoderSpec | None) -> tuple[ContrastiveModel, _Recorder]:
    rec = _Recorder(image_spec)
    vec = create_encoder("mlp", in_features=5, hidden=(8,))
    return ContrastiveModel({"histology": rec, "expression": vec}, get_loss("clip"), embed_dim=4), rec


def test_recorded_mean_std_is_applied_to_pixels():
    spec = EncoderSpec(
        name="toy", modality="histology", input_kind="image", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5)
    )
    model, rec = _model(spec)
    x = torch.rand(2, 3, 4, 4)
    model.encode("histology", x)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(rec.seen, (x - mean) / std)


def test_from_scratch_encoders_see_raw_pixels():
    assert create_encoder("cnn_small", channels=(4, 4)).spec.mean is None
    model, rec = _model(EncoderSpec(name="toy", modality="histology", input_kind="image"))
    x = torch.rand(2, 3, 4, 4)
    model.encode("histology", x)
    torch.testing.assert_close(rec.seen, x)


def test_timm_backbone_records_its_normalisation():
    enc = create_encoder("timm:resnet18", pretrained=False)
    assert enc.spec.mean is not None and len(enc.spec.mean) == 3


def test_uint8_pixels_are_converted_on_the_model_side():
    spec = EncoderSpec(
        name="toy", modality="histology", input_kind="image", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5)
    )
    model, rec = _model(spec)
    u8 = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    z_u8 = model.encode("histology", u8)
    seen_u8 = rec.seen
    z_float = model.encode("histology", u8.float() / 255)
    torch.testing.assert_close(seen_u8, rec.seen)  # the encoder saw the same normalised floats
    torch.testing.assert_close(z_u8, z_float)
    assert seen_u8.dtype == torch.float32
    # vector inputs are never rescaled, whatever their dtype
    vec_spec = model.encoders["expression"].spec
    from biomodal.nn.pixels import prepare_pixels

    counts = torch.arange(5, dtype=torch.uint8).view(1, 5)
    assert prepare_pixels(counts, vec_spec) is counts
