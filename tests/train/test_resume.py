import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from biomodal.train import TrainConfig, Trainer
from biomodal.train.loggers import read_csv_metrics
from tests.train._toy import RESUME_CONFIG, PairData, make_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trajectory(out):
    rows = read_csv_metrics(Path(out) / "metrics.csv")
    return [(r["step"], r["epoch"], r["loss"], r["histology-expression"], r["lr"]) for r in rows]


class _Crash:
    def __init__(self, at):
        self.at = at

    def on_step_end(self, trainer, step, row):
        if step == self.at:
            raise RuntimeError("simulated crash")


def _run(out, resume=None, callbacks=(), **kw):
    cfg = TrainConfig(**{**RESUME_CONFIG, "val_every": 6, **kw}, resume=resume)
    model = make_model(0, dropout=0.2)
    val = PairData(32, seed=4)
    trainer = Trainer(model, cfg, out, train_data=PairData(72), val_data=val, callbacks=callbacks)
    return trainer.fit(), model


def test_resume_after_crash_continues_the_same_trajectory(tmp_path):
    full, model_a = _run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "b", callbacks=[_Crash(13)])
    assert len(_trajectory(tmp_path / "b")) == 13  # rows after the step-10 checkpoint exist
    torch.manual_seed(123)  # a different global RNG state must not matter after restore
    resumed, model_b = _run(tmp_path / "b", resume="latest")
    assert _trajectory(tmp_path / "b") == _trajectory(tmp_path / "a")
    assert len(_trajectory(tmp_path / "a")) == 30
    assert read_csv_metrics(tmp_path / "b" / "val_metrics.csv") == read_csv_metrics(
        tmp_path / "a" / "val_metrics.csv"
    )
    for (n, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), n
    assert resumed.step == full.step == 30 and resumed.epoch == full.epoch
    assert len(resumed.history) == 30
    kept = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_00000025.pt", "step_00000030.pt"]


def test_resume_from_explicit_path_and_missing_latest(tmp_path):
    _run(tmp_path / "a", max_steps=10)
    # "latest" without any checkpoint starts fresh
    res, _ = _run(tmp_path / "fresh", resume="latest", max_steps=2)
    assert res.step == 2
    res, _ = _run(
        tmp_path / "c", resume=str(tmp_path / "a" / "checkpoints" / "step_00000005.pt"), max_steps=10
    )
    assert res.step == 10 and _trajectory(tmp_path / "c")[-1][2] == _trajectory(tmp_path / "a")[-1][2]


@pytest.mark.slow
def test_sigkill_mid_training_resumes_identically(tmp_path):
    def start(out, resume, sleep):
        cmd = [sys.executable, "-m", "tests.train._toy", str(out), resume, str(sleep)]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    ref = start(tmp_path / "ref", "none", 0.0)
    victim = start(tmp_path / "victim", "none", 0.2)
    target = tmp_path / "victim" / "checkpoints" / "step_00000010.pt"
    deadline = time.time() + 120
    while not target.exists():
        assert victim.poll() is None, victim.stdout.read().decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    before = _trajectory(tmp_path / "victim")
    assert 10 <= len(before) < 30
    again = start(tmp_path / "victim", "latest", 0.0)
    assert again.wait(timeout=180) == 0, again.stdout.read().decode()
    assert ref.wait(timeout=180) == 0, ref.stdout.read().decode()
    traj_ref, traj = _trajectory(tmp_path / "ref"), _trajectory(tmp_path / "victim")
    assert len(traj_ref) == 30
    assert traj == traj_ref
