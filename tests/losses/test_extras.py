"""Loss options reachable by get_loss, the extra batch keys losses consume, mixing, schedules."""

from __future__ import annotations

import inspect
import logging

import pytest
import torch
import torch.nn.functional as F

from biomodal.errors import ConfigError, DataError
from biomodal.losses import ScheduledLoss, get_loss, get_loss_schedule, list_losses
from biomodal.losses.registry import _LOSSES

#: forward arguments that are run-time objects, not configuration
_RUNTIME = {"generator"}


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def _params(fn):
    return {
        k: p
        for k, p in inspect.signature(fn).parameters.items()
        if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    }


@pytest.mark.parametrize("name", list_losses())
def test_every_option_of_every_loss_is_reachable_by_get_loss(name):
    factory = _LOSSES.get(name)
    ctor = _params(factory)
    for key, p in ctor.items():
        assert p.default is not inspect.Parameter.empty, f"{name}: option {key!r} has no default"
        loss = get_loss(name, **{key: p.default})  # each option alone is accepted
        assert isinstance(loss, torch.nn.Module)
    with pytest.raises(ConfigError, match="does not accept"):
        get_loss(name, not_an_option=1)
    # every forward argument beyond the embeddings is either a batch extra or also a constructor option
    loss = get_loss(name)
    fwd = [k for k in _params(loss.forward) if k not in ("embeddings", "masks")]
    extra = set(getattr(loss, "extra_keys", ()))
    orphans = [k for k in fwd if k not in extra and k not in ctor and k not in _RUNTIME]
    assert not orphans, f"{name}: forward options {orphans} cannot be set from get_loss or the batch"


def test_declared_extra_keys():
    assert get_loss("clip").extra_keys == ("batch_code",)
    assert get_loss("clip_uniformity").extra_keys == ("batch_code",)
    assert get_loss("cwcl").extra_keys == ("reference",)
    assert get_loss("softclip").extra_keys == ("reference",)
    assert get_loss("bimixco").extra_keys == ("mix_perm", "mix_lambda")
    assert get_loss("siglip").extra_keys == ()


def test_reference_kind_is_a_constructor_option():
    n = 6
    e = {"histology": _unit(n, 4, 0), "expression": _unit(n, 4, 1)}
    ref = _unit(n, 3, 2)
    sim = ref @ ref.T
    a = get_loss("cwcl", reference_kind="similarity").double()(e, reference=sim).loss
    b = get_loss("cwcl", reference_kind="embedding").double()(e, reference=ref).loss
    torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="reference_kind"):
        get_loss("softclip", reference_kind="matrix")


# ---------------------------------------------------------------------- bimixco's input mixing
def _mix_batch(n=10, masked=False):
    g = torch.Generator().manual_seed(0)
    b = {"fmri": torch.randn(n, 7, generator=g), "image": torch.randn(n, 5, generator=g)}
    if masked:
        b["image_mask"] = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    return b


def test_mix_inputs_mixes_only_present_rows_among_themselves():
    loss = get_loss("bimixco", source="fmri", target="image", mix_prob=1.0)
    b = _mix_batch(masked=True)
    torch.manual_seed(3)
    mixed, state = loss.mix_inputs(b, ["fmri", "image"])
    perm, lam = state["mix_perm"], state["mix_lambda"]
    present = b["image_mask"]
    assert torch.equal(perm[~present], torch.nonzero(~present).flatten())  # absent rows: identity
    assert bool(present[perm[present]].all())  # present rows mixed with present rows only
    assert bool((lam[~present] == 1).all()) and bool((lam[present] < 1).any())
    expect = lam[:, None] * b["fmri"] + (1 - lam[:, None]) * b["fmri"][perm]
    torch.testing.assert_close(mixed["fmri"], expect)
    assert mixed["image"] is b["image"]
    # same RNG state, same draws
    torch.manual_seed(3)
    again = loss.mix_inputs(b, ["fmri", "image"])[1]
    assert torch.equal(again["mix_perm"], perm) and torch.equal(again["mix_lambda"], lam)
    # the mixing state is exactly what forward needs: no DataError about mixed absent rows
    e = {"fmri": _unit(10, 4, 0).float(), "image": _unit(10, 4, 1).float(), "image_mask": present}
    assert loss(e, **state).loss.isfinite()


def test_mix_prob_and_errors():
    b = _mix_batch()
    torch.manual_seed(0)
    _, state = get_loss("bimixco", mix_prob=0.3).mix_inputs(b, ["fmri", "image"])
    frac = float((state["mix_lambda"] < 1).float().mean())
    assert 0.0 <= frac < 1.0
    mixed, state = get_loss("bimixco", mix_prob=0.0).mix_inputs(b, ["fmri", "image"])
    assert state == {} and mixed["fmri"] is b["fmri"]
    with pytest.raises(ConfigError, match="mix_prob"):
        get_loss("bimixco", mix_prob=1.5)
    with pytest.raises(ConfigError, match="mix_beta"):
        get_loss("bimixco", mix_beta=0.0)
    with pytest.raises(DataError, match="floating"):
        get_loss("bimixco").mix_inputs(
            {"fmri": torch.arange(4), "image": torch.zeros(4, 2)}, ["fmri", "image"]
        )


# ---------------------------------------------------------------------- schedules
def test_scheduled_loss_switches_and_keeps_every_stage(caplog):
    a, b = get_loss("bimixco", source="histology"), get_loss("softclip", logit_scale=5.0)
    loss = ScheduledLoss([(a, 3), (b, None)], names=["bimixco", "softclip"])
    assert [loss.stage_at(s) for s in range(5)] == [0, 0, 0, 1, 1]
    keys = set(loss.state_dict())
    assert {"stages.0.log_logit_scale", "stages.1.log_logit_scale", "step", "stage"} <= keys
    assert len(list(loss.parameters())) == 2
    assert loss.current is a and loss.extra_keys == ("mix_perm", "mix_lambda")
    with caplog.at_level(logging.INFO, logger="biomodal.losses.schedule"):
        assert loss.set_step(2) == 0
        assert not caplog.records
        assert loss.set_step(3) == 1
    assert "bimixco" in caplog.text and "softclip" in caplog.text and "step 3" in caplog.text
    assert loss.current is b and loss.extra_keys == ("reference",)
    e = {"histology": _unit(6, 4, 0).float(), "expression": _unit(6, 4, 1).float()}
    torch.testing.assert_close(loss(e).loss, b(e).loss)
    # mixing follows the stage: softclip does not mix
    batch = {"histology": torch.randn(6, 3), "expression": torch.randn(6, 2)}
    mixed, state = loss.mix_inputs(batch, ["histology", "expression"])
    assert state == {} and mixed["histology"] is batch["histology"]
    # the stage lives in the state dict
    fresh = ScheduledLoss([(get_loss("bimixco"), 3), (get_loss("softclip"), None)])
    fresh.load_state_dict(loss.state_dict())
    assert int(fresh.stage) == 1 and int(fresh.step) == 3 and fresh.current is fresh.stages[1]


def test_scheduled_loss_validation_and_factory():
    clip = get_loss("clip")
    with pytest.raises(ConfigError, match="until_step must be None"):
        ScheduledLoss([(clip, 3)])
    with pytest.raises(ConfigError, match="must exceed"):
        ScheduledLoss([(clip, 3), (get_loss("clip"), 3), (get_loss("clip"), None)])
    with pytest.raises(ConfigError, match="integer >= 1"):
        ScheduledLoss([(clip, 0), (get_loss("clip"), None)])
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        ScheduledLoss([("clip", None)])
    s = get_loss_schedule(
        [{"name": "bimixco", "params": {"mix_beta": 0.3}, "until_step": 5}, {"name": "softclip"}]
    )
    assert s.names == ("bimixco", "softclip") and s.until_steps == (5, None)
    assert s.stages[0].mix_beta == 0.3
    with pytest.raises(ConfigError, match="unknown keys"):
        get_loss_schedule([{"name": "clip", "until": 3}])
    with pytest.raises(ConfigError, match="does not accept"):
        get_loss_schedule([{"name": "clip", "params": {"tau": 1}}])
