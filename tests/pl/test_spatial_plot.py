"""Measured vs predicted expression on the tissue (squidpy's spatial_scatter)."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.errors import DataError
from biomodal.pl.spatial import expression_on_tissue


def _grid(n_x=12, n_y=10):
    return np.stack(np.meshgrid(np.arange(n_x), np.arange(n_y)), -1).reshape(-1, 2) * 200.0


def test_draws_one_panel_per_gene_and_kind_with_spot_values():
    xy = _grid()
    rng = np.random.default_rng(0)
    measured = rng.normal(size=(len(xy), 2))
    fig = expression_on_tissue(xy, measured, measured * 0.5, ["ERBB2", "KRT5"])
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert titles == ["ERBB2 measured", "ERBB2 predicted", "KRT5 measured", "KRT5 predicted"]
    panel = next(ax for ax in fig.axes if ax.get_title() == "KRT5 measured")
    drawn = np.asarray(panel.collections[0].get_array())
    np.testing.assert_allclose(np.sort(drawn), np.sort(measured[:, 1]), rtol=1e-5, atol=1e-6)


def test_writes_a_png_for_several_sections(tmp_path):
    xy = np.concatenate([_grid(), _grid() + 5000.0])
    vals = np.arange(len(xy), dtype=float)[:, None]
    sections = np.repeat(["A1", "C3"], len(xy) // 2)
    expression_on_tissue(xy, vals, vals, ["G"], tmp_path / "p.png", sections=sections)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(DataError, match=r"must be \(n, 2\), \(n, 2\)"):
        expression_on_tissue(_grid(), np.zeros((3, 2)), np.zeros((3, 2)), ["a", "b"])
