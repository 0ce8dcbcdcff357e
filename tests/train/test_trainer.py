import math

import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.train import TrainConfig, Trainer, fit
from biomodal.train.loggers import read_csv_metrics
from tests.train._toy import PairData, make_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


BASE = dict(batch_size=16, lr=5e-3, log_every=1, progress=False, device="cpu", ckpt_every=0)


def test_fit_logs_checkpoints_and_learns(tmp_path):
    model = make_model(0)
    res = fit(
        model, PairData(96), tmp_path, max_steps=24, **BASE, extra={"genes": ["A", "B"], "recipe": "toy"}
    )
    rows = read_csv_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 25))
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "epoch", "loss"] and header[-1] == "time"
    assert {"histology-expression", "lr", "lr_encoder", "grad_norm"} <= set(header)
    assert rows[-1]["epoch"] == 3 and res.epoch == 4 and res.step == 24
    assert sum(r["loss"] for r in rows[-4:]) < 0.7 * sum(r["loss"] for r in rows[:4])
    assert res.final_metrics["loss"] == rows[-1]["loss"] and len(res.history) == 24
    ckpt = torch.load(res.last_checkpoint, weights_only=True)
    assert ckpt["format"] == "biomodal-checkpoint" and ckpt["version"] == 1
    assert ckpt["modalities"] == ["histology", "expression"] and ckpt["step"] == 24
    assert ckpt["extra"] == {"genes": ["A", "B"], "recipe": "toy"}
    assert TrainConfig.from_dict(ckpt["config"]).max_steps == 24
    fresh = make_model(1)
    fresh.load_checkpoint(res.last_checkpoint)
    for (n, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)
    assert "TrainResult(" in repr(res) and (tmp_path / "config.json").is_file()


def test_lr_schedule_matches_reference(tmp_path):
    cfg = TrainConfig(max_steps=12, warmup_steps=3, min_lr_ratio=0.1, encoder_lr=1e-3, **{**BASE, "lr": 1e-2})
    Trainer(make_model(0), cfg, tmp_path, train_data=PairData(64)).fit()
    rows = read_csv_metrics(tmp_path / "metrics.csv")

    def ref(s):  # lr used at 1-based step s is logged after the scheduler moved to step s
        if s < 3:
            return (s + 1) / 3
        p = (s - 3) / 9
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    for r in rows:
        s = int(r["step"])
        assert r["lr"] == pytest.approx(1e-2 * ref(s)) and r["lr_encoder"] == pytest.approx(1e-3 * ref(s))


def _losses(path):
    return [(r["step"], r["loss"], r["histology-expression"]) for r in read_csv_metrics(path / "metrics.csv")]


def test_same_seed_same_metrics(tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        fit(make_model(0, dropout=0.2), PairData(64), tmp_path / name, max_steps=10, seed=seed, **BASE)
        runs[name] = _losses(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_trainer_accumulation_matches_full_batch(tmp_path):
    params = {}
    for k in (1, 4):
        model = make_model(0, adversary=True).double()
        cfg = TrainConfig(max_steps=3, accum_steps=k, grad_clip=0.5, **{**BASE, "batch_size": 32})
        Trainer(model, cfg, tmp_path / str(k), train_data=PairData(64, dtype=torch.float64)).fit()
        params[k] = model.state_dict()
        assert len(_losses(tmp_path / str(k))) == 3
    for n in params[1]:
        torch.testing.assert_close(params[4][n], params[1][n], rtol=1e-5, atol=1e-7, msg=n)
    torch.testing.assert_close(
        torch.tensor(_losses(tmp_path / "4")), torch.tensor(_losses(tmp_path / "1")), rtol=1e-6, atol=1e-9
    )


def test_early_stopping_and_best_checkpoint(tmp_path):
    values = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.9])
    seen = []

    def val_fn(model):
        assert not model.training and not torch.is_grad_enabled()
        seen.append(1)
        return {"val/recall@1_mean": next(values), "val/other": 1.0}

    class Recorder:
        def __init__(self):
            self.events = []

        def on_validation_end(self, trainer, metrics):
            self.events.append(trainer.step)

    rec = Recorder()
    res = fit(
        make_model(0), PairData(64), tmp_path, max_steps=40, val_every=2, early_stopping_patience=2,
        val_fn=val_fn, callbacks=[rec], **BASE,
    )  # fmt: skip
    assert res.stopped_early and res.step == 8 and len(seen) == 4 and rec.events == [2, 4, 6, 8]
    assert res.best_metric == 0.7 and res.best_checkpoint.name == "best.pt"
    assert torch.load(res.best_checkpoint, weights_only=True)["step"] == 4
    val = read_csv_metrics(tmp_path / "val_metrics.csv")
    assert [v["val/recall@1_mean"] for v in val] == [0.5, 0.7, 0.6, 0.65]
    assert res.final_metrics["val/other"] == 1.0


def test_val_loss_matches_manual_computation(tmp_path):
    model = make_model(0)
    val = PairData(40, seed=9)
    res = fit(model, PairData(64), tmp_path, max_steps=4, val_data=val, **{**BASE, "batch_size": 16})
    model.eval()
    with torch.no_grad():
        batches = [
            torch.utils.data.default_collate([val[i] for i in range(s, min(s + 16, 40))]) for s in (0, 16, 32)
        ]
        ref = sum(model.compute_loss(b).loss.item() for b in batches) / 3
    assert res.val_history[-1]["val/loss"] == pytest.approx(ref, rel=1e-6)
    assert res.best_checkpoint is None  # default metric (recall) absent: no best tracking


def test_frozen_encoder_unchanged_and_logit_scale_clamped(tmp_path):
    model = make_model(0)
    model.loss.max_logit_scale = 15.0
    model.freeze("histology")
    before = {k: v.clone() for k, v in model.encoders["histology"].state_dict().items()}
    head_before = [p.clone() for p in model.heads["histology"].parameters()]
    fit(model, PairData(64), tmp_path, max_steps=5, **{**BASE, "lr": 0.5})
    for k, v in model.encoders["histology"].state_dict().items():
        assert torch.equal(v, before[k])
    assert not all(torch.equal(a, b) for a, b in zip(model.heads["histology"].parameters(), head_before))
    assert math.exp(model.loss.log_logit_scale.item()) <= 15.0 + 1e-4


def test_tensorboard_and_bf16_cpu(tmp_path):
    res = fit(make_model(0), PairData(64), tmp_path, max_steps=3, precision="bf16", tensorboard=True, **BASE)
    assert math.isfinite(res.final_metrics["loss"])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="precision='16-mixed' needs a CUDA device"):
        fit(make_model(0), PairData(64), tmp_path, max_steps=1, precision="16-mixed", **BASE)
    with pytest.raises(DataError, match="yields no batch: 8 samples for batch_size=16"):
        fit(make_model(0), PairData(8), tmp_path, max_steps=1, **BASE)
    with pytest.raises(ConfigError, match="early_stopping_metric='val/auc' is not among"):
        fit(
            make_model(0), PairData(64), tmp_path, max_steps=2, val_fn=lambda m: {"val/x": 1.0},
            early_stopping_patience=1, early_stopping_metric="val/auc", **BASE,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="max_steps or max_epochs"):
        fit(make_model(0), PairData(64), tmp_path)
    with pytest.raises(ConfigError, match="ContrastiveModel"):
        Trainer(torch.nn.Linear(2, 2), TrainConfig(max_steps=1), tmp_path, train_data=PairData(8))
    with pytest.raises(ConfigError, match="holds a set"):
        Trainer(make_model(0), TrainConfig(max_steps=1), tmp_path, train_data=PairData(8), extra={"a": {1}})


def test_max_epochs_and_custom_batch_sampler(tmp_path):
    order = []

    class Fixed:
        def set_epoch(self, e):
            order.append(e)

        def __iter__(self):
            return iter([list(range(0, 16)), list(range(16, 32))])

        def __len__(self):
            return 2

    res = fit(make_model(0), PairData(64), tmp_path, max_epochs=3, batch_sampler=Fixed(), **BASE)
    assert res.step == 6 and res.epoch == 3 and order == [0, 1, 2]


@pytest.mark.gpu
def test_cuda_mixed_precision(tmp_path):
    for prec, k in (("bf16", 1), ("16-mixed", 2)):
        res = fit(
            make_model(0), PairData(64), tmp_path / prec, max_steps=4, precision=prec, accum_steps=k,
            **{**BASE, "device": "cuda"},
        )  # fmt: skip
        assert math.isfinite(res.final_metrics["loss"])
        ckpt = torch.load(res.last_checkpoint, weights_only=True)
        assert (ckpt["scaler"] is not None) == (prec == "16-mixed")


def test_accepts_a_ready_dataloader_and_resumes_it(tmp_path):
    def loader():
        return torch.utils.data.DataLoader(PairData(64), batch_size=16, shuffle=False, drop_last=True)

    kw = {**BASE, "ckpt_every": 3, "max_steps": 7}
    full = fit(make_model(0), loader(), tmp_path / "a", **kw)

    class Crash:
        def on_step_end(self, trainer, step, row):
            if step == 5:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fit(
            make_model(0),
            loader(),
            tmp_path / "b",
            max_steps=7,
            callbacks=[Crash()],
            **{**BASE, "ckpt_every": 3},
        )
    again = fit(
        make_model(0), loader(), tmp_path / "b", max_steps=7, resume="latest", **{**BASE, "ckpt_every": 3}
    )
    assert [r["loss"] for r in again.history] == [r["loss"] for r in full.history]
