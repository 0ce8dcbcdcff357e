"""The model/batch contract: nested micro-batches, declared covariates, masked rows not encoded."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from biomodal.errors import ConfigError, DataError
from biomodal.losses import get_loss
from biomodal.nn.registry import EncoderSpec, create_encoder, register_encoder
from biomodal.train import ContrastiveModel
from biomodal.train.gradcache import accumulated_backward, split_batch
from tests.train._toy import PairData, ToyEncoder, collate, make_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TokenEncoder(nn.Module):
    """Mean of token embeddings under the attention mask (a tiny text encoder taking a token dict)."""

    def __init__(self, vocab: int = 30, out_dim: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim
        self.rows: list[int] = []

    def forward(self, x: dict) -> torch.Tensor:
        ids, att = x["input_ids"], x["attention_mask"]
        assert ids.shape == att.shape
        self.rows.append(ids.shape[0])
        h = (self.emb(ids) * att[..., None]).sum(1) / att.sum(1, keepdim=True).clamp(min=1)
        return self.norm(h)


class ImageEncoder(nn.Module):
    def __init__(self, out_dim: int = 12) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.lin = nn.Linear(16, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.net(x))


class CountingEncoder(ToyEncoder):
    """Toy encoder that records the rows and covariates it receives."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.calls: list[int] = []
        self.codes: list[torch.Tensor] = []

    def forward(self, x, batch_code=None):
        self.calls.append(x.shape[0])
        if batch_code is not None:
            self.codes.append(batch_code.clone())
        return super().forward(x, batch_code)


def _text_image_batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30, (n, 7), generator=g)
    att = (torch.rand(n, 7, generator=g) > 0.3).long()
    att[:, 0] = 1
    return {
        "text": {"input_ids": ids, "attention_mask": att},
        "image": torch.rand(n, 3, 6, 6, generator=g, dtype=torch.float64),
        "names": [f"s{i}" for i in range(n)],
        "index": torch.arange(n),
    }


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _accum(model, batch, k):
    model.zero_grad()
    out = accumulated_backward(
        model,
        batch,
        k,
        autocast=contextlib.nullcontext,
        backward=lambda loss: loss.backward(),
        device=torch.device("cpu"),
    )
    return out, _grads(model)


def _full(model, batch):
    model.zero_grad()
    out = model.compute_loss(batch)
    out.loss.backward()
    return out, _grads(model)


# ---------------------------------------------------------------------- 1. nested micro-batches
def test_split_batch_slices_nested_token_dicts_and_lists():
    b = _text_image_batch(10)
    b["nested"] = {"a": {"b": torch.arange(10)}, "shared": torch.tensor(3.0), "tup": tuple(range(10))}
    b["config"] = "x"
    parts = split_batch(b, 3)
    assert [p["text"]["input_ids"].shape[0] for p in parts] == [3, 3, 4]
    for key in ("input_ids", "attention_mask"):
        torch.testing.assert_close(torch.cat([p["text"][key] for p in parts]), b["text"][key])
    assert [n for p in parts for n in p["names"]] == b["names"]
    assert sum((p["nested"]["tup"] for p in parts), ()) == b["nested"]["tup"]
    assert torch.equal(torch.cat([p["nested"]["a"]["b"] for p in parts]), torch.arange(10))
    assert all(p["config"] == "x" and float(p["nested"]["shared"]) == 3.0 for p in parts)
    # a batch whose only tensors are inside a dict still splits
    only = split_batch({"text": b["text"]}, 2)
    assert [p["text"]["input_ids"].shape[0] for p in only] == [5, 5]


def test_gradcache_with_token_dict_matches_full_batch():
    torch.manual_seed(0)
    model = ContrastiveModel(
        {"text": TokenEncoder(), "image": ImageEncoder()}, get_loss("clip"), embed_dim=8
    ).double()
    batch = _text_image_batch(12)
    ref_out, ref = _full(model, batch)
    out, got = _accum(model, batch, 2)
    torch.testing.assert_close(out.loss, ref_out.loss, rtol=1e-6, atol=1e-8)
    assert set(got) == set(ref) and len(ref) >= 8
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-8, msg=k)
    assert model.encoders["text"].rows[-2:] == [6, 6]


# ---------------------------------------------------------------------- 3. declared covariates
class SubjectAdapter(nn.Module):
    def __init__(self, in_features: int = 10, n_subjects: int = 3, out_dim: int = 6) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(nn.Linear(in_features, out_dim) for _ in range(n_subjects))
        self.out_dim = out_dim
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        self.seen.append(subject.clone())
        return torch.stack([self.adapters[int(s)](row) for row, s in zip(x, subject)])


@pytest.fixture
def _subject_adapter():
    """Register a covariate-taking encoder for one test (the registry is global)."""
    from biomodal.nn.registry import _REGISTRY

    @register_encoder("_test_subject_adapter", modality="fmri", input_kind="vector", covariates=("subject",))
    def _build(in_features: int = 10, n_subjects: int = 3) -> nn.Module:
        return SubjectAdapter(in_features, n_subjects)

    yield
    _REGISTRY._factories.pop("_test_subject_adapter", None)
    _REGISTRY._meta.pop("_test_subject_adapter", None)


@pytest.mark.usefixtures("_subject_adapter")
def test_registry_records_declared_covariates():
    assert create_encoder("_test_subject_adapter").spec.covariates == ("subject",)
    assert create_encoder("mlp", in_features=5, n_batches=2).spec.covariates == ("batch_code",)
    assert create_encoder("mlp", in_features=5).spec.covariates == ()
    with pytest.raises(ConfigError, match="covariates"):
        register_encoder("_test_bad_cov", modality="fmri", input_kind="vector", covariates=("batch",))


@pytest.mark.usefixtures("_subject_adapter")
def test_model_passes_exactly_the_declared_covariates():
    torch.manual_seed(0)
    fmri = create_encoder("_test_subject_adapter", in_features=10)
    expr = create_encoder("mlp", in_features=20, n_batches=2, hidden=(8,))  # declares batch_code
    plain = create_encoder("mlp", in_features=20, hidden=(8,))  # its forward takes batch_code, spec says ()
    b = collate([PairData(8)[i] for i in range(8)])
    b["subject"] = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    b["fmri"] = b.pop("histology")
    model = ContrastiveModel({"fmri": fmri, "expression": expr}, get_loss("clip"), embed_dim=4)
    assert model.covariates == {"fmri": ("subject",), "expression": ("batch_code",)}
    model(b)
    torch.testing.assert_close(fmri.seen[-1], b["subject"])
    # the batch codes reach the conditioned norm: other codes give other embeddings
    model.eval()
    z = model(b)["expression"]
    with torch.no_grad():
        expr.norms[0].gamma[1].mul_(3.0)
    z2 = model(b)["expression"]
    odd = b["batch_code"] == 1
    assert torch.allclose(z[~odd], z2[~odd]) and not torch.allclose(z[odd], z2[odd])
    # a declared covariate missing from the batch is an error naming the encoder and the key
    with pytest.raises(DataError, match=r"encoder 'fmri' declares covariate 'subject'.*no 'subject'"):
        model({k: v for k, v in b.items() if k != "subject"})
    # the spec wins over the signature: a spec without covariates gets none
    model2 = ContrastiveModel({"fmri": fmri, "expression": plain}, get_loss("clip"), embed_dim=4)
    assert model2.covariates["expression"] == ()
    model2({k: v for k, v in b.items() if k != "batch_code"})


def test_batch_key_and_encode_keywords():
    enc = CountingEncoder(10, batch_codes=2)
    model = ContrastiveModel({"histology": enc, "expression": ToyEncoder(20)}, get_loss("clip"), embed_dim=8,
                             batch_key="donor_code")  # fmt: skip
    b = collate([PairData(6)[i] for i in range(6)])
    b["donor_code"] = torch.tensor([1, 0, 1, 0, 1, 0])
    model(b)
    torch.testing.assert_close(enc.codes[-1], b["donor_code"])
    # encode(): declared covariates are passed, known-but-undeclared ones ignored, unknown ones are errors
    model.encode("histology", b["histology"], batch_code=b["donor_code"])
    torch.testing.assert_close(enc.codes[-1], b["donor_code"])
    model.encode("expression", b["expression"], batch_code=b["donor_code"], subject=b["donor_code"])
    with pytest.raises(DataError, match="unknown keyword"):
        model.encode("expression", b["expression"], batch=b["donor_code"])

    # plain modules without spec or attribute: named forward parameters that are covariate names
    class Sig(nn.Module):
        out_dim = 3

        def forward(self, x, subject=None, other=None):
            return x[:, :3]

    m = ContrastiveModel({"histology": Sig(), "expression": ToyEncoder(20)}, get_loss("clip"), embed_dim=3)
    assert m.covariates["histology"] == ("subject",)
    with pytest.raises(ConfigError, match="declares covariates"):
        bad = ToyEncoder(10)
        bad.covariates = ("batch",)
        ContrastiveModel({"histology": bad}, get_loss("clip"))


def test_spec_without_covariates_overrides_signature():
    enc = CountingEncoder(10, batch_codes=2)
    enc.spec = EncoderSpec(name="toy", modality="histology", input_kind="vector", covariates=())
    model = ContrastiveModel({"histology": enc, "expression": ToyEncoder(20)}, get_loss("clip"), embed_dim=8)
    model(collate([PairData(4)[i] for i in range(4)]))
    assert enc.codes == [] and enc.calls == [4]


# ---------------------------------------------------------------------- 4. masked rows are not encoded
def _masked_batch(n=12, present=(0, 2, 3, 7, 8, 11)):
    b = collate([PairData(n, seed=2)[i] for i in range(n)])
    m = torch.zeros(n, dtype=torch.bool)
    m[list(present)] = True
    b["expression_mask"] = m
    return b


def test_only_present_rows_reach_the_encoder_and_covariates_follow():
    torch.manual_seed(0)
    enc = CountingEncoder(20, batch_codes=2)
    model = ContrastiveModel({"histology": ToyEncoder(10), "expression": enc}, get_loss("clip"), embed_dim=8)
    b = _masked_batch()
    out = model(b)
    m = b["expression_mask"]
    assert enc.calls == [int(m.sum())]
    torch.testing.assert_close(enc.codes[-1], b["batch_code"][m])
    assert out["expression"].shape == (12, 8) and out["expression_mask"] is m
    assert torch.all(out["expression"][~m] == 0)
    torch.testing.assert_close(out["expression"][m].norm(dim=1), torch.ones(int(m.sum())))
    # the present rows' embeddings equal those of a batch holding only those rows
    only = {k: (v[m] if isinstance(v, torch.Tensor) and k != "expression_mask" else v) for k, v in b.items()}
    only.pop("expression_mask")
    torch.testing.assert_close(out["expression"][m], model(only)["expression"])
    # nothing present: no encoder call, zeros
    enc.calls.clear()
    none = dict(b, expression_mask=torch.zeros(12, dtype=torch.bool))
    z = model(none)["expression"]
    assert enc.calls == [] and z.shape == (12, 8) and torch.all(z == 0)
    assert model.compute_loss(none).loss.isfinite()
    with pytest.raises(DataError, match="has 5 rows"):
        model(dict(b, expression_mask=torch.ones(5, dtype=torch.bool)))


def test_token_dicts_are_sliced_by_the_mask():
    torch.manual_seed(0)
    model = ContrastiveModel({"text": TokenEncoder(), "image": ImageEncoder()}, get_loss("clip"), embed_dim=8)
    b = _text_image_batch(10)
    b["image"] = b["image"].float()
    b["text_mask"] = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    z = model(b)["text"]
    assert model.encoders["text"].rows == [6]
    keep = b["text_mask"]
    ref = model.encode("text", {k: v[keep] for k, v in b["text"].items()})
    torch.testing.assert_close(z[keep], ref)


def test_batchnorm_running_stats_ignore_absent_rows():
    torch.manual_seed(0)
    model = make_model(0).double()
    model.encoders["expression"].net.insert(1, nn.BatchNorm1d(24).double())
    ref = copy.deepcopy(model)
    b = _masked_batch()
    b = {
        k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in b.items()
    }
    m = b["expression_mask"]
    model.train()(b)
    ref.train()({"expression": b["expression"][m]})
    bn, bn_ref = model.encoders["expression"].net[1], ref.encoders["expression"].net[1]
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)


def test_masked_loss_equals_loss_on_explicit_rows():
    model = make_model(0).double()
    b = _masked_batch()
    b = {
        k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in b.items()
    }
    m = b["expression_mask"]
    explicit = {
        "histology": b["histology"][m],
        "expression": b["expression"][m],
        "batch_code": b["batch_code"][m],
    }
    torch.testing.assert_close(model.compute_loss(b).loss, model.compute_loss(explicit).loss)


@pytest.mark.parametrize("present", [(0, 2, 3, 7, 8, 11), (6, 7, 8, 9, 10, 11)])
def test_gradcache_with_masks_matches_full_batch(present):
    """Second case: the first micro-batch has no expression row at all (no encoder call)."""
    model = make_model(0, adversary=True).double()
    b = _masked_batch(present=present)
    b = {
        k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in b.items()
    }
    ref_out, ref = _full(model, b)
    out, got = _accum(model, b, 2)
    torch.testing.assert_close(out.loss, ref_out.loss)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-10, msg=k)
