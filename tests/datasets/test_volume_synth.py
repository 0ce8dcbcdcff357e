"""Generated CT-like volumes: findings sit in a few slices where they are drawn; reports say so."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.datasets._volume_synth import FINDINGS, make_volume_patients
from biomodal.errors import ConfigError


@pytest.fixture(scope="module")
def vols():
    return make_volume_patients(120, seed=4, depth=16, px=32)


def test_shapes_and_prevalence(vols):
    assert vols["volume"].shape == (120, 1, 16, 32, 32) and vols["volume"].dtype == np.uint8
    assert vols["findings"].shape == (120, 3) and 0.2 < vols["findings"].mean() < 0.5
    assert ((vols["slices"] >= 0) == (vols["findings"] > 0)).all()
    assert list(vols["obs"].columns) == ["patient_id", *FINDINGS]


def test_findings_are_local_to_their_slices(vols):
    v = vols["volume"][:, 0].astype(float)
    j = FINDINGS.index("calcification")
    has = np.flatnonzero(vols["findings"][:, j] > 0)
    # the brightest voxel of a calcified volume lies within two slices of the calcification
    for i in has[:10]:
        peak = np.unravel_index(np.argmax(v[i]), v[i].shape)[0]
        assert abs(peak - vols["slices"][i, j]) <= 2
    # a cyst darkens the liver slices only: the top slices do not differ with or without one
    c = FINDINGS.index("cyst")
    top = v[:, :4].mean(axis=(1, 2, 3))
    assert abs(top[vols["findings"][:, c] > 0].mean() - top[vols["findings"][:, c] == 0].mean()) < 3


def test_reports_describe_the_findings(vols):
    rep = np.array(vols["report"])
    nod = vols["findings"][:, FINDINGS.index("nodule")] > 0
    says = np.array(["nodule" in r and "no pulmonary nodules" not in r and "without nodules" not in r
                     and "no suspicious" not in r for r in rep])  # fmt: skip
    assert says[nod].mean() > 0.65 and says[~nod].sum() == 0  # mentioned with probability 0.9
    assert all(r.strip() for r in rep)


def test_seeded_and_bad_settings():
    a, b = make_volume_patients(5, seed=1), make_volume_patients(5, seed=1)
    assert np.array_equal(a["volume"], b["volume"]) and a["report"] == b["report"]
    with pytest.raises(ConfigError, match="depth"):
        make_volume_patients(5, depth=4)
    with pytest.raises(ConfigError, match="prevalence"):
        make_volume_patients(5, prevalence=0.0)
