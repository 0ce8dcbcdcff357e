"""A run folder belongs to one run: reruns are refused, resumed or overwritten, never mixed."""

from __future__ import annotations

import json

import pytest

from biomodal.cli import main
from biomodal.errors import CheckpointError, ConfigError
from biomodal.recipes import run
from biomodal.recipes.checkpoint import evaluate_checkpoint
from tests.recipes import _toy_family  # noqa: F401  (registers the "toy" family)


def _recipe(steps: int = 20, lr: float = 0.01) -> dict:
    return {
        "name": "toy",
        "data": {"family": "toy", "n": 120},
        "model": {"embed_dim": 8},
        "eval": {"plots": False},
        "trainer": {"max_steps": steps, "batch_size": 24, "lr": lr, "ckpt_every": 10, "progress": False},
    }


def _steps(out) -> list[int]:
    lines = (out / "metrics.csv").read_text().splitlines()
    col = lines[0].split(",").index("step")
    return [int(float(row.split(",")[col])) for row in lines[1:]]


def test_rerun_into_a_run_folder_is_refused_and_loses_nothing(tmp_path):
    out = tmp_path / "run"
    run(_recipe(), out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume.*--overwrite"):
        run(_recipe(lr=0.02), out=out)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # recipe.yaml, metrics.json, model.pt untouched
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ckpts


def test_cli_refuses_then_overwrite_replaces(tmp_path, capsys):
    import yaml

    out = tmp_path / "run"
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(_recipe()))
    run(_recipe(), out=out)
    old_hash = json.loads((out / "run.json").read_text())["recipe_hash"]
    assert main(["run", str(path), "--out", str(out), "--set", "trainer.lr=0.02"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and err.count("\n") == 1
    metrics = run(_recipe(lr=0.02), out=out, overwrite=True)
    assert json.loads((out / "run.json").read_text())["recipe_hash"] != old_hash
    assert _steps(out) == sorted(set(_steps(out)))  # one run's rows only
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == metrics["train"]["steps"] == 20


def test_resume_continues_the_same_run_and_refuses_another(tmp_path):
    out = tmp_path / "run"
    run(_recipe(steps=20), out=out)
    with pytest.raises(ConfigError, match=r"differs in: trainer\.lr"):
        run(_recipe(steps=30, lr=0.05), out=out, resume=True)
    metrics = run(_recipe(steps=30), out=out, resume=True)  # only max_steps changed
    assert metrics["train"]["steps"] == 30
    steps = _steps(out)
    assert steps == sorted(set(steps)) and steps[-1] == 30  # continued, no step logged twice


def test_eval_never_replaces_a_training_runs_metrics(tmp_path):
    out = tmp_path / "run"
    run(_recipe(), out=out)
    saved = (out / "metrics.json").read_bytes()
    with pytest.raises(CheckpointError, match="training run folder"):
        evaluate_checkpoint(out / "model.pt", out=out)
    assert (out / "metrics.json").read_bytes() == saved
    assert (out / "eval_model" / "metrics.json").exists() is False
    again = evaluate_checkpoint(out / "model.pt")
    assert (out / "eval_model" / "metrics.json").is_file() and "retrieval" in again
