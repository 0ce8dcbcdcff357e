"""Momentum distillation (ALBEF): alpha=0 is the plain loss, EMA teacher, no gradient, resume."""

import contextlib
import copy

import numpy as np
import pytest
import torch

from biomodal.errors import ConfigError
from biomodal.losses import ScheduledLoss, get_loss
from biomodal.train import ContrastiveModel, TrainConfig, Trainer
from biomodal.train.gradcache import accumulated_backward
from tests.train._toy import PairData, ToyEncoder, collate


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(distill=None, loss="clip", seed=0, dropout=0.0):
    torch.manual_seed(seed)
    enc = {"histology": ToyEncoder(10, dropout=dropout), "expression": ToyEncoder(20, dropout=dropout)}
    lossmod = get_loss(loss) if isinstance(loss, str) else loss
    return ContrastiveModel(enc, lossmod, embed_dim=8, distill=distill)


def _batch(n=12, masked=False):
    return collate([PairData(n, seed=1, dtype=torch.float64, masked=masked)[i] for i in range(n)])


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_alpha_zero_equals_the_plain_loss():
    plain, dist = _model().double(), _model({"alpha": 0.0, "momentum": 0.9}).double()
    b = _batch(masked=True)
    a, d = plain.compute_loss(b), dist.compute_loss(b)
    torch.testing.assert_close(d.loss, a.loss)
    assert "distill" in d.parts and "contrastive" in d.parts
    a.loss.backward()
    d.loss.backward()
    ga, gd = _grads(plain), _grads(dist)
    assert set(ga) == set(gd)
    for k in ga:
        torch.testing.assert_close(gd[k], ga[k])


def _naive_soft(za, zb, ta, tb, s):
    za, zb, ta, tb = (x.detach().numpy() for x in (za, zb, ta, tb))

    def ce(q_logits, p_logits):
        q = np.exp(q_logits - q_logits.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        lp = p_logits - p_logits.max(1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
        return -(q * lp).sum()

    n = len(za)
    return (ce(s * ta @ tb.T, s * za @ zb.T) + ce(s * tb @ ta.T, s * zb @ za.T)) / (2 * n)


def test_loss_mixes_hard_and_soft_targets():
    model = _model({"alpha": 0.4}).double()
    b = _batch()
    inputs = model.loss_inputs(b)
    assert {"teacher/histology", "teacher/expression"} <= set(inputs)
    with torch.no_grad():  # perturb the teacher so that its targets differ from the student's
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inputs = model.loss_inputs(b)
    out = model.loss_from_embeddings(inputs, b)
    s = float(model.loss.logit_scale.detach())
    soft = _naive_soft(inputs["histology"], inputs["expression"], inputs["teacher/histology"],
                       inputs["teacher/expression"], s)  # fmt: skip
    assert out.parts["distill"].item() == pytest.approx(soft, rel=1e-6)
    hard = model.loss(model(b)).loss.item()
    assert out.loss.item() == pytest.approx(0.6 * hard + 0.4 * soft, rel=1e-6)


def test_teacher_moves_as_ema_and_never_gets_gradients():
    m = 0.9
    model = _model({"alpha": 0.5, "momentum": m}).double()
    b = _batch()
    model.compute_loss(b).loss.backward()  # first use synchronises the teacher with the student
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    names = {
        n
        for g in model.param_groups(1e-3, 1e-3, 0.0)
        for p in g["params"]
        for n, q in model.named_parameters()
        if q is p
    }
    assert not any(n.startswith("teacher.") for n in names)
    before = copy.deepcopy(model.teacher.state_dict())
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.1)
    student = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    model.after_optimizer_step()
    after = model.teacher.state_dict()
    for k, v in student.items():
        torch.testing.assert_close(after[f"encoders.{k}"], m * before[f"encoders.{k}"] + (1 - m) * v)
    assert not model.teacher.training
    model.train()
    assert not model.teacher.training  # stays in eval mode


def test_gradcache_with_distillation_matches_full_batch():
    model = _model({"alpha": 0.5, "momentum": 0.99}).double()
    b = _batch(masked=True)
    model.set_step(0)  # synchronise
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.mul_(0.9)
    model.zero_grad()
    ref_out = model.compute_loss(b)
    ref_out.loss.backward()
    ref = _grads(model)
    model.zero_grad()
    out = accumulated_backward(
        model,
        b,
        3,
        autocast=contextlib.nullcontext,
        backward=lambda loss: loss.backward(),
        device=torch.device("cpu"),
    )
    got = _grads(model)
    torch.testing.assert_close(out.loss, ref_out.loss)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-10, msg=k)


def test_warmup_ramps_alpha_and_config_errors():
    model = _model({"alpha": 0.4, "warmup_steps": 10})
    model.set_step(5)
    assert model.teacher.current_alpha == pytest.approx(0.2)
    model.set_step(50)
    assert model.teacher.current_alpha == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="SigLipLoss does not support"):
        _model({"alpha": 0.4}, loss="siglip")
    with pytest.raises(ConfigError, match="does not support"):
        _model({"alpha": 0.4}, loss=ScheduledLoss([(get_loss("clip"), 3), (get_loss("symile"), None)]))
    _model({"alpha": 0.4}, loss=ScheduledLoss([(get_loss("clip"), 3), (get_loss("softclip"), None)]))
    with pytest.raises(ConfigError, match="alpha"):
        _model({"alpha": 1.5})
    with pytest.raises(ConfigError, match="momentum"):
        _model({"momentum": 1.0})
    with pytest.raises(ConfigError, match="unknown keys"):
        _model({"alpha": 0.4, "temp": 0.1})


CFG = dict(
    max_steps=8, batch_size=16, lr=5e-3, log_every=1, ckpt_every=3, progress=False, seed=1, device="cpu"
)


class _Crash:
    def on_step_end(self, trainer, step, row):
        if step == 5:
            raise RuntimeError("simulated crash")


def _fit(out, resume=None, callbacks=()):
    model = _model({"alpha": 0.4, "momentum": 0.8}, dropout=0.1)
    Trainer(model, TrainConfig(**CFG, resume=resume), out, train_data=PairData(48), callbacks=callbacks).fit()
    return model


def test_checkpoint_and_resume_restore_the_teacher(tmp_path):
    a = _fit(tmp_path / "a")
    t_a = a.teacher.state_dict()
    # the teacher moved (EMA) but is not the student
    s = a.encoders.state_dict()
    assert any(not torch.allclose(t_a[f"encoders.{k}"], v) for k, v in s.items())
    with pytest.raises(RuntimeError):
        _fit(tmp_path / "b", callbacks=[_Crash()])
    b = _fit(tmp_path / "b", resume="latest")
    for k, v in t_a.items():
        torch.testing.assert_close(b.teacher.state_dict()[k], v, rtol=1e-5, atol=1e-7, msg=k)
    # a fresh model loading the final checkpoint gets the same teacher
    c = _model({"alpha": 0.4, "momentum": 0.8})
    c.load_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000008.pt")
    for k, v in t_a.items():
        torch.testing.assert_close(c.teacher.state_dict()[k], v)
    assert bool(c.teacher.synced)
