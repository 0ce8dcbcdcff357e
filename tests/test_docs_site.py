"""The documentation site builds with warnings as errors (broken links, bad docstrings)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("io", "pp", "data", "nn", "losses", "train", "eval", "pl", "recipes", "datasets")


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install 'biomodal[docs]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install 'biomodal[docs]')")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    cmd = [str(mkdocs)] if mkdocs.exists() else [shutil.which("mkdocs") or "mkdocs"]
    site = tmp_path / "site"
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.perf_counter() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (site / "index.html").is_file() and (site / "architecture" / "index.html").is_file()
    for sub in SUBPACKAGES:
        page = (site / "api" / sub / "index.html").read_text()
        assert f"biomodal.{sub}" in page
        assert ":class:" not in page and ":func:" not in page, f"unconverted Sphinx role on api/{sub}"
    assert "biomodal.io.registry.register_reader" in (site / "api" / "io" / "index.html").read_text()
    assert took < 120, f"docs build took {took:.0f} s"
