"""Loss schedules in the trainer: the switch step, checkpoints and resume land in the right stage."""

import logging
from pathlib import Path

import pytest
import torch

from biomodal.losses import ScheduledLoss, get_loss
from biomodal.train import ContrastiveModel, TrainConfig, Trainer
from biomodal.train.loggers import read_csv_metrics
from tests.train._toy import PairData, ToyEncoder

CFG = dict(max_steps=10, batch_size=16, lr=5e-3, log_every=1, ckpt_every=3, keep_last=5, progress=False,
           seed=2, device="cpu")  # fmt: skip
SWITCH = 5


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model():
    torch.manual_seed(0)
    stages = [
        (get_loss("bimixco", source="histology", logit_scale=10.0), SWITCH),
        (get_loss("softclip"), None),
    ]
    loss = ScheduledLoss(stages, names=["bimixco", "softclip"])
    enc = {"histology": ToyEncoder(10, dropout=0.1), "expression": ToyEncoder(20)}
    return ContrastiveModel(enc, loss, embed_dim=8)


class _Crash:
    def __init__(self, at):
        self.at = at

    def on_step_end(self, trainer, step, row):
        if step == self.at:
            raise RuntimeError("simulated crash")


def _run(out, resume=None, callbacks=(), **kw):
    model = _model()
    cfg = TrainConfig(**{**CFG, **kw}, resume=resume)
    Trainer(model, cfg, out, train_data=PairData(64), callbacks=callbacks).fit()
    return model


def _rows(out):
    return read_csv_metrics(Path(out) / "metrics.csv")


def test_stage_switches_at_the_step_and_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="biomodal.losses.schedule"):
        model = _run(tmp_path / "a")
    rows = _rows(tmp_path / "a")
    assert [int(r["loss_stage"]) for r in rows] == [0] * SWITCH + [1] * (10 - SWITCH)
    assert int(model.loss.stage) == 1 and int(model.loss.step) == 10
    assert sum("at step 5" in r.getMessage() for r in caplog.records) == 1
    # both stages' temperatures are trained while active and saved
    state = torch.load(tmp_path / "a" / "checkpoints" / "step_00000010.pt", weights_only=True)["model"]
    assert {"loss.stages.0.log_logit_scale", "loss.stages.1.log_logit_scale", "loss.stage"} <= set(state)
    assert float(state["loss.stages.0.log_logit_scale"]) != pytest.approx(torch.tensor(10.0).log().item())


@pytest.mark.parametrize("crash_at", [7, 4])  # resume from step 6 (after the switch) / step 3 (before)
def test_resume_lands_in_the_right_stage_and_continues_the_trajectory(tmp_path, crash_at):
    _run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "b", callbacks=[_Crash(crash_at)])
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / f"step_{crash_at - 1:08d}.pt", weights_only=True)
    assert int(ckpt["model"]["loss.stage"]) == int(crash_at - 1 >= SWITCH)
    model = _run(tmp_path / "b", resume="latest")
    assert int(model.loss.stage) == 1
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    assert [r["loss_stage"] for r in a] == [r["loss_stage"] for r in b]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-7), ra["step"]
