"""Shared pytest fixtures: real sample files, markers, seeding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BIOMODAL_SHARED_DATA", _ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Keep caches (frozen-encoder features, fMRI targets) of the test session out of ~/.cache."""
    if "BIOMODAL_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["BIOMODAL_CACHE_DIR"] = tempfile.mkdtemp(prefix="biomodal-test-cache-")
        config._biomodal_cache = os.environ["BIOMODAL_CACHE_DIR"]  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's cache folder when this session made it."""
    made = getattr(config, "_biomodal_cache", None)
    if made:
        import shutil

        shutil.rmtree(made, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``realdata`` tests without ../shared/data."""
    has_data = SHARED_DATA.is_dir()
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_gpu = False
    for item in items:
        if "realdata" in item.keywords and not has_data:
            item.add_marker(pytest.mark.skip(reason=f"real sample data not found at {SHARED_DATA}"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A small generated multi-donor spatial dataset (see biomodal.datasets)."""
    from biomodal.datasets import make_demo_spatial

    out = tmp_path_factory.mktemp("demo")
    return make_demo_spatial(out, n_donors=2, sections_per_donor=2, seed=0, small=True)
