"""Package-level behaviour: light import, fast CLI, lazy heavy dependencies."""

import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "monai", "lightning", "scanpy", "squidpy", "transformers", "timm", "openslide", "anndata")


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_does_not_load_heavy_libraries():
    out = _run("import sys, biomodal; print(' '.join(sorted(sys.modules)))").split()
    loaded = [m for m in HEAVY if m in out]
    assert loaded == [], f"import biomodal loaded {loaded}"


def test_cli_help_is_light():
    code = (
        "import sys; from biomodal.cli import _build_parser; _build_parser().format_help();"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = _run(code).split()
    assert [m for m in HEAVY if m in out] == []


def test_import_time_budget():
    # Generous bound for a noisy shared CI machine; bench/bench_import.py reports the real figure.
    best = min(_timed("import biomodal") for _ in range(3))
    assert best < 1.5


def _timed(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t


def test_cli_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "biomodal.cli", "--help"], check=True, capture_output=True, text=True
    ).stdout
    for cmd in ("run", "eval", "embed", "demo-data", "recipes"):
        assert cmd in out
    ver = subprocess.run([sys.executable, "-m", "biomodal.cli", "--version"], capture_output=True, text=True)
    assert "biomodal 0.1.0" in ver.stdout


def test_cli_reports_biomodal_errors_cleanly():
    res = subprocess.run(
        [sys.executable, "-m", "biomodal.cli", "run", "no/such/recipe.yaml"], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "biomodal: error:" in res.stderr and "no/such/recipe.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_lists_recipes():
    res = subprocess.run([sys.executable, "-m", "biomodal.cli", "recipes"], capture_output=True, text=True)
    assert "spatial/demo" in res.stdout


@pytest.mark.parametrize(
    "attr", ["io", "pp", "data", "nn", "losses", "train", "eval", "pl", "recipes", "datasets"]
)
def test_subpackages_resolve(attr):
    import biomodal

    assert getattr(biomodal, attr).__name__ == f"biomodal.{attr}"
