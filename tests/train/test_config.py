import pytest

from biomodal.errors import ConfigError
from biomodal.train import TrainConfig


def test_defaults_and_roundtrip():
    cfg = TrainConfig(max_steps=10, encoder_lr=None, lr=3e-4, precision="bf16")
    assert cfg.effective_encoder_lr == 3e-4
    d = cfg.to_dict()
    assert d["betas"] == [0.9, 0.999]
    again = TrainConfig.from_dict(d)
    assert again == cfg
    assert TrainConfig.from_dict({"max_epochs": 2, "precision": 32}).precision == "32"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": None, "max_epochs": None}, "max_steps"),
        ({"batch_size": 30, "accum_steps": 4}, "accum_steps"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"precision": "fp8"}, "precision"),
        ({"schedule": "step"}, "schedule"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
        ({"device": "tpu"}, "device"),
        ({"early_stopping_mode": "up"}, "early_stopping_mode"),
        ({"keep_last": 0}, "keep_last"),
        ({"batch_size": True}, "batch_size"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_bad_values_name_the_field(kw, field):
    args = {"max_steps": 5, **kw}
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}="):
        TrainConfig(**args)


def test_unknown_key_hint():
    with pytest.raises(ConfigError, match="Did you mean 'max_steps'"):
        TrainConfig.from_dict({"max_step": 3})


def test_micro_batch_size():
    assert TrainConfig(max_steps=1, batch_size=32, accum_steps=4).micro_batch_size == 8
