import pytest
import torch
import torch.nn.functional as F
from torch import nn

from biomodal.errors import CheckpointError, ConfigError, DataError
from biomodal.train import ContrastiveModel
from tests.train._toy import MinimalInfoNCE, PairData, ToyEncoder, collate, make_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(n=12, masked=False):
    return collate([PairData(n, masked=masked)[i] for i in range(n)])


def test_encode_and_forward():
    model = make_model(0)
    b = _batch(masked=True)
    z = model.encode("histology", b["histology"])
    assert z.shape == (12, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(12))
    out = model(b)
    assert set(out) == {"histology", "expression", "expression_mask"}
    assert out["expression_mask"] is b["expression_mask"]
    # a modality absent from the batch is skipped, none present is an error
    only = model({"histology": b["histology"]})
    assert set(only) == {"histology"}
    with pytest.raises(DataError, match="none of the model's modalities"):
        model({"xray": b["histology"]})
    with pytest.raises(DataError, match="no encoder for 'ecg'"):
        model.encode("ecg", b["histology"])


def test_batch_codes_reach_batch_aware_encoders():
    enc = ToyEncoder(10, batch_codes=2)
    model = ContrastiveModel({"histology": enc, "expression": ToyEncoder(20)}, MinimalInfoNCE(), embed_dim=8)
    b = _batch()
    model(b)
    assert enc.seen_batch


def test_construction_errors():
    with pytest.raises(ConfigError, match="unknown modality 'histo'"):
        ContrastiveModel({"histo": ToyEncoder(10)}, MinimalInfoNCE())
    with pytest.raises(ConfigError, match=r"encoders\['histology'\] needs an integer attribute out_dim"):
        ContrastiveModel({"histology": nn.Linear(3, 3)}, MinimalInfoNCE())
    with pytest.raises(ConfigError, match="embed_dim"):
        ContrastiveModel({"histology": ToyEncoder(10)}, MinimalInfoNCE(), embed_dim=0)
    with pytest.raises(ConfigError, match="without an encoder"):
        ContrastiveModel({"histology": ToyEncoder(10)}, MinimalInfoNCE(), head={"xray": "mlp"})


def test_heads_per_modality():
    model = make_model(0, head={"histology": "mlp", "expression": nn.Linear(16, 8)})
    assert isinstance(model.heads["expression"], nn.Linear)
    assert sum(p.numel() for p in model.heads["histology"].parameters()) > 16 * 8 + 8


def test_param_groups_no_decay_on_bias_norm_and_scale():
    model = make_model(0, adversary=True)
    model.heads["histology"] = nn.Sequential(nn.Linear(16, 8), nn.LayerNorm(8))
    groups = model.param_groups(encoder_lr=1e-5, head_lr=1e-3, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    ids = {k: {id(p) for p in g["params"]} for k, g in by_name.items()}
    assert by_name["encoder"]["lr"] == 1e-5 and by_name["head"]["lr"] == 1e-3
    assert by_name["encoder_no_decay"]["weight_decay"] == 0 and by_name["head"]["weight_decay"] == 0.1
    enc = model.encoders["histology"].net
    assert id(enc[0].weight) in ids["encoder"] and id(enc[0].bias) in ids["encoder_no_decay"]
    assert id(model.loss.log_logit_scale) in ids["head_no_decay"]
    assert id(model.heads["histology"][1].weight) in ids["head_no_decay"]
    assert id(model.adversary[0].weight) in ids["head"]
    # every parameter exactly once
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())


def test_freeze_unfreeze():
    model = make_model(0, dropout=0.5)
    model.freeze("histology")
    model.train()
    assert not model.encoders["histology"].training and model.encoders["expression"].training
    out = model.compute_loss(_batch())
    out.loss.backward()
    assert all(p.grad is None for p in model.encoders["histology"].parameters())
    assert all(p.grad is not None for p in model.heads["histology"].parameters())
    assert "frozen" in repr(model)
    model.unfreeze("histology")
    assert model.encoders["histology"].training
    assert all(p.requires_grad for p in model.encoders["histology"].parameters())
    with pytest.raises(ConfigError, match="cannot freeze 'xray'"):
        model.freeze("xray")


def test_adversary_term_and_gradient_reversal():
    model = make_model(0, adversary=True, adversary_weight=0.5, adversary_lambda=2.0).double()
    b = {k: (v.double() if v.is_floating_point() else v) for k, v in _batch(16).items()}
    out = model.compute_loss(b)
    assert set(out.parts) >= {"contrastive", "adversary", "histology-expression"}
    torch.testing.assert_close(out.loss, out.parts["contrastive"] + 0.5 * out.parts["adversary"])

    # independent reference: mean over modalities of CE(adversary(z), batch) without reversal
    emb = model(b)
    codes = b["batch_code"]
    ref = torch.stack([F.cross_entropy(model.adversary(emb[m]), codes) for m in model.modalities]).mean()
    torch.testing.assert_close(out.parts["adversary"], ref)
    w = model.encoders["expression"].net[0].weight
    g_model = torch.autograd.grad(out.parts["adversary"], w)[0]
    g_ref = torch.autograd.grad(ref, w)[0]
    torch.testing.assert_close(g_model, -2.0 * g_ref)  # reversed and scaled by lambda
    # the adversary itself is trained to *minimise* the CE
    a = model.adversary[0].weight
    out2 = model.compute_loss(b)
    torch.testing.assert_close(
        torch.autograd.grad(out2.parts["adversary"], a)[0],
        torch.autograd.grad(
            torch.stack(
                [F.cross_entropy(model.adversary(model(b)[m]), b["batch_code"]) for m in model.modalities]
            ).mean(),
            a,
        )[0],
    )
    with pytest.raises(DataError, match="batch codes"):
        model.compute_loss({k: v for k, v in b.items() if k != "batch_code"})


def test_adversary_respects_masks():
    model = make_model(0, adversary=True)
    b = _batch(16, masked=True)
    out = model.compute_loss(b)
    emb = model(b)
    m = b["expression_mask"]
    ref = 0.5 * (
        F.cross_entropy(model.adversary(emb["histology"]), b["batch_code"])
        + F.cross_entropy(model.adversary(emb["expression"][m]), b["batch_code"][m])
    )
    torch.testing.assert_close(out.parts["adversary"], ref)


def test_repr_and_checkpoint_mismatch(tmp_path):
    model = make_model(0)
    r = repr(model)
    assert "histology: ToyEncoder" in r and "expression" in r and "ClipLoss" in r
    other = ContrastiveModel({"histology": ToyEncoder(10)}, MinimalInfoNCE(), embed_dim=8)
    ckpt = {"format": "biomodal-checkpoint", "version": 1, "modalities": ["histology", "expression"],
            "model": make_model(0).state_dict()}  # fmt: skip
    with pytest.raises(CheckpointError, match=r"modalities \['histology', 'expression'\]"):
        other.load_checkpoint(ckpt)
    model.load_checkpoint(ckpt)


def test_batch_discriminator_is_not_reversed_twice():
    from biomodal.nn import BatchDiscriminator

    disc = BatchDiscriminator(8, 2, hidden=(8,), dropout=0.0, weight=0.7)
    model = make_model(0, adversary=disc).double()
    b = {k: (v.double() if v.is_floating_point() else v) for k, v in _batch(16).items()}
    out = model.compute_loss(b)
    emb = model(b)
    head = disc.net  # the classifier behind the discriminator's own reversal layer
    ref = torch.stack([F.cross_entropy(head(emb[m]), b["batch_code"]) for m in model.modalities]).mean()
    torch.testing.assert_close(out.parts["adversary"], ref)
    w = model.encoders["histology"].net[0].weight
    g = torch.autograd.grad(out.parts["adversary"], w)[0]
    torch.testing.assert_close(g, -0.7 * torch.autograd.grad(ref, w)[0])


def test_adversary_ignores_unknown_batch_codes():
    model = make_model(0, adversary=True)
    b = _batch(16)
    b["batch_code"] = b["batch_code"].clone()
    b["batch_code"][:4] = -1
    out = model.compute_loss(b)
    emb = model(b)
    keep = b["batch_code"] >= 0
    ref = torch.stack(
        [F.cross_entropy(model.adversary(emb[m][keep]), b["batch_code"][keep]) for m in model.modalities]
    )
    torch.testing.assert_close(out.parts["adversary"], ref.mean())
