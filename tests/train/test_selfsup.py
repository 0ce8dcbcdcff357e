"""CleanCLIP-style in-modality terms: weight 0, identical vs unrelated views, masks, GradCache."""

import contextlib
import math
from pathlib import Path

import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.losses import get_loss
from biomodal.train import ContrastiveModel, TrainConfig, Trainer
from biomodal.train.gradcache import accumulated_backward
from biomodal.train.loggers import read_csv_metrics
from biomodal.train.selfsup import view_infonce
from tests.train._toy import PairData, ToyEncoder, collate


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(ssl=None, augment=None, seed=0, **kw):
    torch.manual_seed(seed)
    enc = {"histology": ToyEncoder(10), "expression": ToyEncoder(20)}
    return ContrastiveModel(enc, get_loss("clip"), embed_dim=8, self_supervised=ssl, augment=augment, **kw)


def _batch(n=16, masked=False, seed=1):
    b = collate([PairData(n, seed=seed, dtype=torch.float64, masked=masked)[i] for i in range(n)])
    g = torch.Generator().manual_seed(seed + 7)
    b["histology_view"] = b["histology"] + 0.05 * torch.randn(
        b["histology"].shape, generator=g, dtype=torch.float64
    )
    return b


class _Flip:
    """Deterministic augmentation that records how many rows it saw."""

    def __init__(self):
        self.rows = []

    def __call__(self, x):
        self.rows.append(x.shape[0])
        return x.flip(1) * 0.9


def test_weight_zero_equals_plain_loss():
    plain, zero = _model().double(), _model({"histology": 0.0}).double()
    b = _batch()
    torch.testing.assert_close(zero.compute_loss(b).loss, plain.compute_loss(b).loss)
    assert zero.selfsup.weights == {}


def test_term_is_low_for_identical_views_and_high_for_unrelated_ones():
    model = _model({"histology": 1.0}).double()
    b = _batch(32)
    same = dict(b, histology_view=b["histology"].clone())
    other = dict(b, histology_view=_batch(32, seed=9)["histology"])
    t_same = float(model.compute_loss(same).parts["ssl/histology"].detach())
    t_other = float(model.compute_loss(other).parts["ssl/histology"].detach())
    assert t_same < 0.5 * t_other and t_other > 0.5 * math.log(32)
    z = torch.nn.functional.normalize(torch.randn(32, 8, dtype=torch.float64), dim=1)
    assert float(view_infonce(z, z, None, 10.0)) < float(view_infonce(z, z.roll(1, 0), None, 10.0))
    # the weighted term is added to the contrastive loss
    out = _model({"histology": 0.5}).double().compute_loss(same)
    torch.testing.assert_close(out.loss, out.parts["contrastive"] + 0.5 * out.parts["ssl/histology"])


def test_views_from_an_augmentation_and_with_masks():
    aug = _Flip()
    model = _model({"expression": 2.0}, augment={"expression": aug}).double()
    b = _batch(masked=True)
    m = b["expression_mask"]
    out = model.compute_loss(b)
    assert aug.rows == [int(m.sum())]  # only present rows are augmented and encoded
    explicit = {
        "histology": b["histology"][m],
        "expression": b["expression"][m],
        "batch_code": b["batch_code"][m],
    }
    ref = model.compute_loss(explicit)
    torch.testing.assert_close(out.parts["ssl/expression"], ref.parts["ssl/expression"])
    with pytest.raises(DataError, match="histology_view"):
        _model({"histology": 1.0}).double().compute_loss(
            {k: v for k, v in b.items() if k != "histology_view"}
        )
    with pytest.raises(ConfigError, match="without an encoder"):
        _model({"xray": 1.0})
    with pytest.raises(ConfigError, match="self_supervised"):
        _model(augment={"histology": aug})


@pytest.mark.parametrize("source", ["batch", "augment"])
def test_gradcache_matches_full_batch(source):
    augment = {"histology": _Flip()} if source == "augment" else None
    model = _model(1.0 if source == "batch" else {"histology": 1.0}, augment=augment).double()
    b = _batch(masked=True)
    b["histology_mask"] = torch.ones(16, dtype=torch.bool)
    b["histology_mask"][[1, 5, 6]] = False
    if source == "augment":
        b.pop("histology_view")
    if source == "batch":
        b["expression_view"] = b["expression"] * 0.8
    model.zero_grad()
    ref_out = model.compute_loss(b)
    ref_out.loss.backward()
    ref = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out = accumulated_backward(
        model,
        b,
        2,
        autocast=contextlib.nullcontext,
        backward=lambda loss: loss.backward(),
        device=torch.device("cpu"),
    )
    torch.testing.assert_close(out.loss, ref_out.loss)
    for k, g in ref.items():
        torch.testing.assert_close(model.get_parameter(k).grad, g, rtol=1e-5, atol=1e-10, msg=k)


def test_trainer_logs_the_ssl_parts(tmp_path):
    class Views(PairData):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["histology_view"] = item["histology"] * 0.9
            return item

    model = _model({"histology": 0.3})
    cfg = TrainConfig(max_steps=3, batch_size=16, log_every=1, progress=False, device="cpu", ckpt_every=0)
    Trainer(model, cfg, tmp_path, train_data=Views(48)).fit()
    rows = read_csv_metrics(Path(tmp_path) / "metrics.csv")
    assert len(rows) == 3 and all("ssl/histology" in r and "contrastive" in r for r in rows)
    assert "loss_stage" not in rows[0]
