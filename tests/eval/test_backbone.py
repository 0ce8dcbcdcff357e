"""Encoder features before the head (EncoderView / encoder_features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomodal.errors import DataError
from biomodal.eval.backbone import EncoderView, encoder_features
from biomodal.losses import get_loss
from biomodal.nn import create_encoder
from biomodal.train import ContrastiveModel


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.img = torch.rand(n, 3, 16, 16, generator=g)
        self.vec = torch.rand(n, 6, generator=g)

    def __len__(self) -> int:
        return len(self.img)

    def __getitem__(self, i: int) -> dict:
        return {"histology": self.img[i], "expression": self.vec[i], "index": torch.tensor(i)}


def test_encoder_features_are_the_encoders_output_not_the_head():
    torch.manual_seed(0)
    encs = {
        "histology": create_encoder("cnn_small", channels=(4, 8)),
        "expression": create_encoder("mlp", in_features=6),
    }
    model = ContrastiveModel(encs, get_loss("clip"), embed_dim=3).eval()
    data = _Pairs()
    feats = encoder_features(model, data, ["histology", "expression"], batch_size=4)
    with torch.no_grad():
        want = {"histology": encs["histology"](data.img), "expression": encs["expression"](data.vec)}
        head = model.encode("histology", data.img)
    for m in want:
        assert feats[m].shape == (10, encs[m].out_dim)
        np.testing.assert_allclose(feats[m], want[m].numpy(), rtol=1e-5, atol=1e-6)
    assert head.shape[1] == 3 != feats["histology"].shape[1]  # the 3-d head output is something else
    assert model.training is False and not encs["histology"].training  # the model's mode is kept
    with pytest.raises(DataError, match="no encoder for 'ecg'"):
        EncoderView(model).encode("ecg", data.vec)


def test_encoder_view_applies_the_recorded_input_normalisation():
    enc = create_encoder("cnn_small", channels=(4,), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    model = ContrastiveModel(
        {"histology": enc, "expression": create_encoder("mlp", in_features=6)}, get_loss("clip"), embed_dim=3
    ).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(
            EncoderView(model).encode("histology", x), enc((x - 0.5) / 0.25), atol=1e-6
        )
