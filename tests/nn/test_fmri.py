"""fMRI encoder: per-subject adapters by the ``subject`` covariate, shared backbone, transfer."""

from __future__ import annotations

import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.nn import create_encoder
from biomodal.nn.fmri import SubjectAdapterEncoder, add_subject, freeze_for_new_subject


def _batch(voxels, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.arange(n) % len(voxels)
    x = torch.zeros(n, max(voxels))
    for i, c in enumerate(codes.tolist()):
        x[i, : voxels[c]] = torch.randn(voxels[c], generator=g)
    return x, codes


@pytest.mark.parametrize("adapter", ["linear", "mlp"])
def test_registered_encoder_routes_rows_to_their_subject(adapter):
    voxels = [7, 11, 5]
    enc = create_encoder("fmri_adapters", voxels=voxels, width=16, depth=2, adapter=adapter, dropout=0.0)
    assert enc.spec.covariates == ("subject",) and enc.spec.input_shape["voxels"] == voxels
    assert enc.spec.modality == "fmri" and enc.out_dim == 16
    enc.eval()
    x, codes = _batch(voxels)
    out = enc(x, subject=codes)
    assert out.shape == (6, 16)
    # row i equals the backbone applied to its own subject's adapter, alone
    for i, c in enumerate(codes.tolist()):
        alone = enc.backbone(enc.adapters[c](x[i : i + 1, : voxels[c]]))
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    # padding beyond a subject's voxels is ignored
    x2 = x.clone()
    x2[codes == 2, 5:] = 99.0
    torch.testing.assert_close(enc(x2, subject=codes), out)
    # the same voxels under another subject code give another embedding
    swapped = enc(x[:1, :], subject=torch.tensor([1]))
    assert not torch.allclose(swapped, out[:1])


def test_encoder_errors():
    enc = SubjectAdapterEncoder([4, 6], width=8)
    x, codes = _batch([4, 6], n=4)
    with pytest.raises(DataError, match=r"subject codes \[5\] have no adapter"):
        enc(x, subject=torch.tensor([0, 1, 5, 0]))
    with pytest.raises(DataError, match=r"needs subject= codes"):
        enc(x)
    with pytest.raises(DataError, match=r"input has 4 voxel columns, a subject here needs 6"):
        enc(x[:, :4], subject=codes)
    with pytest.raises(ConfigError, match=r"voxels \(each subject's voxel count\) is required"):
        create_encoder("fmri_adapters")
    with pytest.raises(ConfigError, match=r"adapter='deep'"):
        SubjectAdapterEncoder([3], adapter="deep")


def test_contrastive_model_passes_subject_from_batch():
    from biomodal.losses import get_loss
    from biomodal.train import ContrastiveModel

    voxels = [5, 9]
    model = ContrastiveModel(
        {
            "fmri": create_encoder("fmri_adapters", voxels=voxels, width=16),
            "image": create_encoder("embedding", in_features=12),
        },
        get_loss("clip"),
        embed_dim=8,
    )
    x, codes = _batch(voxels, n=8)
    batch = {"fmri": x, "image": torch.randn(8, 12), "subject": codes}
    out = model.compute_loss(batch)
    out.loss.backward()
    enc = model.encoders["fmri"]
    assert all(p.grad is not None for p in enc.adapters.parameters())
    with pytest.raises(DataError, match=r"covariate 'subject'"):
        model({"fmri": x, "image": batch["image"]})


def test_new_subject_transfer_trains_only_its_adapter():
    from biomodal.losses import get_loss
    from biomodal.train import ContrastiveModel

    enc = create_encoder("fmri_adapters", voxels=[5, 9], width=16)
    model = ContrastiveModel(
        {"fmri": enc, "image": create_encoder("embedding", in_features=12)}, get_loss("clip")
    )
    code = add_subject(model, 13, seed=0)
    assert code == 2 and enc.voxels == [5, 9, 13] and enc.spec.config["voxels"] == [5, 9, 13]
    params = freeze_for_new_subject(model, code)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(params) == 2  # weight and bias of one linear adapter
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(params, lr=0.5)
    x = torch.randn(8, 13)
    batch = {"fmri": x, "image": torch.randn(8, 12), "subject": torch.full((8,), code)}
    model.compute_loss(batch).loss.backward()
    opt.step()
    after = model.state_dict()
    changed = sorted(k for k in after if not torch.equal(after[k], before[k]))
    assert changed == ["encoders.fmri.adapters.2.bias", "encoders.fmri.adapters.2.weight"]
    rebuilt = enc.spec.build()
    assert rebuilt.voxels == [5, 9, 13]


def test_embedding_pass_through():
    enc = create_encoder("embedding", in_features=3)
    x = torch.randn(2, 3)
    torch.testing.assert_close(enc(x), x)
    with pytest.raises(DataError, match=r"expected \[B, 3\] embeddings"):
        enc(torch.randn(2, 4))


def test_code_column_gives_subjects_without_the_covariate():
    torch.manual_seed(0)
    enc = SubjectAdapterEncoder([4, 6], width=8, dropout=0.0, code_column=True).eval()
    x, codes = _batch([4, 6], n=4)
    with_col = torch.cat([codes[:, None].float(), x], dim=1)
    torch.testing.assert_close(enc(with_col), enc(with_col, subject=codes))
    plain = SubjectAdapterEncoder([4, 6], width=8, dropout=0.0)
    plain.load_state_dict(enc.state_dict())
    torch.testing.assert_close(enc(with_col), plain.eval()(x, subject=codes))
    with_col[0, 0] = 0.5  # a mixed (non-integer) code is refused
    with pytest.raises(DataError, match=r"column 0 must hold integer subject codes"):
        enc(with_col)
