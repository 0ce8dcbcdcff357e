"""embed(): dataset-order embeddings from a tiny dummy model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from biomodal.errors import DataError
from biomodal.eval import embed


class DummyModel(torch.nn.Module):
    """Implements the model contract: ``modalities`` and ``encode(name, x)``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.modalities = ["histology", "expression"]
        self.heads = torch.nn.ModuleDict(
            {"histology": torch.nn.Linear(12, 6), "expression": torch.nn.Linear(10, 6)}
        )
        self.calls = []

    def encode(self, name, x):
        self.calls.append((name, self.training, torch.is_inference_mode_enabled(), len(x)))
        z = self.heads[name](x.reshape(len(x), -1).float())
        return torch.nn.functional.normalize(z, dim=1)


class PairDataset(Dataset):
    def __init__(self, n=23, with_obs=True):
        g = torch.Generator().manual_seed(1)
        self.histology = torch.randn(n, 3, 2, 2, generator=g)
        self.expression = torch.randn(n, 10, generator=g)
        self.mask = torch.arange(n) % 4 != 1  # every fourth spot lacks expression
        if with_obs:
            self.obs = pd.DataFrame(
                {"section": [f"s{i % 3}" for i in range(n)]}, index=[f"spot{i}" for i in range(n)]
            )

    def __len__(self):
        return len(self.histology)

    def __getitem__(self, i):
        return {
            "histology": self.histology[i],
            "expression": self.expression[i],
            "expression_mask": self.mask[i],
            "index": i,
            "batch_code": i % 3,
        }


def _reference(model, ds):
    with torch.no_grad():
        h = torch.nn.functional.normalize(model.heads["histology"](ds.histology.reshape(len(ds), -1)), dim=1)
        e = torch.nn.functional.normalize(model.heads["expression"](ds.expression), dim=1)
    e = e.numpy().copy()
    e[~ds.mask.numpy()] = np.nan
    return h.numpy(), e


def test_embed_dataset_matches_per_item_reference_and_restores_mode():
    model, ds = DummyModel(), PairDataset()
    model.train()
    out = embed(model, ds, batch_size=5, progress=False)
    h, e = _reference(model, ds)
    assert set(out) == {"histology", "expression", "expression_mask"}
    assert out["histology"].dtype == np.float32 and out["histology"].shape == (23, 6)
    np.testing.assert_allclose(out["histology"], h, atol=1e-6)
    np.testing.assert_allclose(out["expression"], e, atol=1e-6)  # NaN where masked
    np.testing.assert_array_equal(out["expression_mask"], ds.mask.numpy())
    assert model.training  # restored
    assert all(not training and inference for _, training, inference, _ in model.calls)
    # masked rows are never sent to the encoder
    assert sum(n for name, *_, n in model.calls if name == "expression") == int(ds.mask.sum())


def test_shuffled_loader_is_put_back_in_dataset_order():
    model, ds = DummyModel(), PairDataset()
    ordered = embed(model, ds, progress=False)
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    shuffled = embed(model, loader, progress=False)
    for key in ordered:
        if ordered[key].dtype == bool:  # masks are exact; embeddings went through other batch sizes
            np.testing.assert_array_equal(shuffled[key], ordered[key])
        else:  # different batching may change BLAS kernels: compare with a tolerance, never bit for bit
            np.testing.assert_allclose(shuffled[key], ordered[key], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_shuffled_loader_without_index_is_refused():
    class NoIndex(PairDataset):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            del item["index"]
            return item

    loader = DataLoader(NoIndex(), batch_size=4, shuffle=True)
    with pytest.raises(DataError, match="index"):
        embed(DummyModel(), loader, progress=False)


def test_as_anndata_uses_dataset_obs():
    model, ds = DummyModel(), PairDataset()
    adata = embed(model, ds, as_anndata=True, progress=False, modalities=["histology"])
    assert adata.n_obs == 23
    assert list(adata.obs_names[:2]) == ["spot0", "spot1"]
    assert list(adata.obs["section"][:4]) == ["s0", "s1", "s2", "s0"]
    assert set(adata.obsm) == {"X_biomodal_histology"}
    np.testing.assert_allclose(adata.obsm["X_biomodal_histology"], _reference(model, ds)[0], atol=1e-6)
    bare = embed(model, PairDataset(with_obs=False), as_anndata=True, progress=False)
    assert list(bare.obs_names[:2]) == ["0", "1"]
    assert bare.obs["expression_mask"].dtype == bool


def test_unknown_modality_is_a_clear_error():
    with pytest.raises(DataError, match="ecg"):
        embed(DummyModel(), PairDataset(), modalities=["ecg"], progress=False)
    with pytest.raises(DataError, match="Dataset or DataLoader"):
        embed(DummyModel(), 42, progress=False)


def test_text_lists_and_token_dicts_are_masked_per_item():
    class TextModel(torch.nn.Module):
        modalities = ("report", "text")

        def encode(self, name, x):
            if name == "report":  # list of strings
                v = torch.tensor([[len(s), 1.0] for s in x])
            else:  # tokenizer-style dict
                v = torch.stack([x["input_ids"].sum(1).float(), x["attention_mask"].sum(1).float()], 1)
            return torch.nn.functional.normalize(v, dim=1)

    class Reports(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {
                "report": "x" * (i + 1),
                "report_mask": i != 2,
                "text": {"input_ids": torch.full((4,), i), "attention_mask": torch.ones(4)},
            }

    def collate(items):
        return {
            "report": [it["report"] for it in items],
            "report_mask": torch.tensor([it["report_mask"] for it in items]),
            "text": torch.utils.data.default_collate([it["text"] for it in items]),
        }

    ds = Reports()
    ds.collate_fn = collate
    out = embed(TextModel(), ds, batch_size=4, progress=False)
    lengths = np.arange(1, 7, dtype=np.float64)
    ref = np.stack([lengths, np.ones(6)], 1) / np.sqrt(lengths**2 + 1)[:, None]
    np.testing.assert_allclose(out["report"][[0, 1, 3, 4, 5]], ref[[0, 1, 3, 4, 5]], rtol=1e-6)
    assert np.isnan(out["report"][2]).all()
    assert out["text"].shape == (6, 2)


def test_covariates_are_passed_only_when_asked_and_sliced_by_the_mask():
    from biomodal.losses import get_loss
    from biomodal.train import ContrastiveModel
    from tests.train._toy import ToyEncoder

    class SubjectEncoder(ToyEncoder):
        def forward(self, x, subject=None):
            self.seen = None if subject is None else subject.clone()
            return super().forward(x)

    class Subjects(PairDataset):
        def __getitem__(self, i):
            return {**super().__getitem__(i), "subject": i % 4}

    torch.manual_seed(0)
    enc = SubjectEncoder(10)
    enc.covariates = ("subject",)
    model = ContrastiveModel({"histology": ToyEncoder(12), "expression": enc}, get_loss("clip"), embed_dim=4)
    ds = Subjects()
    hist = ds.histology
    ds.histology = hist.reshape(len(hist), -1)
    embed(model, ds, batch_size=23, progress=False)
    assert enc.seen is None  # not asked: encoders use their defaults (no batch codes at evaluation)
    out = embed(model, ds, batch_size=23, progress=False, covariates=("subject",))
    codes = torch.arange(23) % 4
    torch.testing.assert_close(enc.seen, codes[ds.mask])
    assert np.isnan(out["expression"][~ds.mask.numpy()]).all()
    with pytest.raises(DataError, match="covariates"):
        embed(model, ds, progress=False, covariates=("donor",))
