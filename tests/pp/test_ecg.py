"""ECG preprocessing: filters measured on sines, resampling, crop/pad, lead order, the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.errors import ConfigError, DataError
from biomodal.io import STANDARD_LEADS, ecg_from_array, read, read_wfdb
from biomodal.pp import ECGPipeline
from biomodal.pp.ecg import (
    bandpass,
    crop_or_pad,
    fill_nan,
    notch,
    remove_baseline,
    resample,
    to_standard_leads,
)

FS = 500.0
T = np.arange(int(10 * FS)) / FS


def _sine(f, t=T):
    return np.sin(2 * np.pi * f * t)[None]


def _gain(out, f):
    """Amplitude of the ``f`` Hz component of ``out`` (10 s at 500 Hz, so ``f`` falls on a bin)."""
    spec = np.abs(np.fft.rfft(out[0])) / (len(T) / 2)
    return spec[round(f * len(T) / FS)]


def test_bandpass_keeps_the_band_and_is_zero_phase():
    assert _gain(bandpass(_sine(10), FS), 10) == pytest.approx(1.0, abs=0.02)
    assert _gain(bandpass(_sine(0.1), FS), 0.1) < 0.1
    assert _gain(bandpass(_sine(120), FS), 120) < 1e-3
    out = bandpass(_sine(10), FS)[0]
    lags = np.arange(-20, 21)
    xc = [np.dot(np.roll(out, k)[1000:-1000], _sine(10)[0, 1000:-1000]) for k in lags]
    assert lags[int(np.argmax(xc))] == 0  # no phase shift
    with pytest.raises(ConfigError, match="below the Nyquist"):
        bandpass(_sine(10), 100.0, high=50.0)


def test_notch_removes_mains_only():
    x = _sine(10) + 0.5 * _sine(50)
    out = notch(x, FS, freq=50.0)
    resid = out - _sine(10)
    assert np.std(resid[..., 1000:-1000]) < 0.02
    with pytest.raises(ConfigError, match="notch frequency"):
        notch(x, 80.0, freq=50.0)


@pytest.mark.parametrize("method", ["median", "highpass"])
def test_baseline_wander_is_removed(method):
    beats = np.exp(-(((T * 1.2) % 1.0 - 0.3) ** 2) / 0.0005)[None]  # narrow QRS-like pulses
    drift = 0.8 * np.sin(2 * np.pi * 0.15 * T)[None] + 0.3
    out = remove_baseline(beats + drift, FS, method=method)
    mid = slice(1000, -1000)
    before = np.abs(np.median(beats + drift - beats, axis=-1))
    err = out[..., mid] - (beats[..., mid] - np.median(beats))
    assert np.sqrt(np.mean(err**2)) < 0.15 < float(before.max())
    # the pulses survive
    assert np.ptp(out[..., mid]) > 0.7


def test_resample_keeps_frequency_and_length():
    t360 = np.arange(3600) / 360.0
    out = resample(_sine(7, t360), 360.0, 500.0)
    assert out.shape == (1, 5000)
    spec = np.abs(np.fft.rfft(out[0]))
    assert np.fft.rfftfreq(5000, 1 / 500.0)[np.argmax(spec)] == pytest.approx(7.0, abs=0.11)
    np.testing.assert_allclose(out[0, 500:4500], _sine(7, np.arange(5000) / 500.0)[0, 500:4500], atol=0.01)
    assert resample(_sine(7), FS, 100.0).shape == (1, 1000)


def test_crop_or_pad():
    x = np.arange(10.0)[None].repeat(2, 0)
    assert crop_or_pad(x, 4, mode="start")[0].tolist() == [0, 1, 2, 3]
    assert crop_or_pad(x, 4, mode="center")[0].tolist() == [3, 4, 5, 6]
    r = crop_or_pad(x, 4, mode="random", rng=np.random.default_rng(0))[0]
    assert np.all(np.diff(r) == 1) and r[0] in range(7)
    assert crop_or_pad(x, 14, mode="center")[0].tolist() == [0, 0, *range(10), 0, 0]
    assert crop_or_pad(x, 12, mode="start")[0, -2:].tolist() == [0, 0]


def test_fill_nan_interpolates():
    x = np.array([[0.0, np.nan, 2.0, np.nan], [np.nan] * 4])
    np.testing.assert_allclose(fill_nan(x), [[0, 1, 2, 2], [0, 0, 0, 0]])


def test_standard_order_mask_and_derived_limb_leads():
    x = np.vstack([np.full(5, 1.0), np.full(5, 3.0), np.full(5, 9.0)])
    out, mask = to_standard_leads(x, ["V5", "MLII", "vx"])
    assert out.shape == (12, 5) and mask.tolist() == [n in ("II", "V5") for n in STANDARD_LEADS]
    assert out[STANDARD_LEADS.index("II"), 0] == 3 and out[0].sum() == 0
    x2 = np.vstack([np.full(5, 1.0), np.full(5, 3.0)])
    out2, mask2 = to_standard_leads(x2, ["I", "II"], derive_limb=True)
    assert mask2[:6].all() and not mask2[6:].any()
    np.testing.assert_allclose(out2[:6, 0], [1, 3, 2, -2, -0.5, 2.5])
    with pytest.raises(DataError, match="2 lead names for 3 rows"):
        to_standard_leads(x, ["I", "II"])


@pytest.mark.realdata
def test_derived_limb_leads_match_recorded_ones_on_ptbxl(shared_data):
    ecg = read_wfdb(shared_data / "ecg" / "ptbxl" / "records500" / "00000" / "00001_hr")
    full, _ = to_standard_leads(ecg.signal, ecg.leads)
    derived, _ = to_standard_leads(ecg.signal[:2], ecg.leads[:2], derive_limb=True)
    # Einthoven/Goldberger hold on the real recording to within rounding of the 1 uV storage
    np.testing.assert_allclose(derived[2:6], full[2:6], atol=0.005)


@pytest.mark.realdata
def test_pipeline_on_every_real_layout(shared_data):
    pipe = ECGPipeline(fs=100, duration_s=10, notch=50.0, standardize="record")
    mitbih = read(shared_data / "ecg" / "wfdb" / "100.hea", sampto=3600)  # 10 s at 360 Hz
    x, mask = pipe(mitbih)
    assert x.shape == (12, 1000) and x.dtype == np.float32
    assert [STANDARD_LEADS[i] for i in np.flatnonzero(mask)] == ["II", "V5"]
    assert np.all(x[~mask] == 0) and np.allclose(x[mask].std(axis=1), 1.0, atol=1e-3)
    for path in ("dicom/waveform_ecg.dcm", "ptbxl/records500/00000/00002_hr.hea", "wfdb/s0010_re.hea"):
        x, mask = pipe(read(shared_data / "ecg" / path))
        assert x.shape == (12, 1000) and mask.all() and np.isfinite(x).all()
    x4, mask4 = pipe(read(shared_data / "ecg" / "wfdb" / "test01_00s.hea"))  # 8 s, unnamed leads
    assert x4.shape == (12, 1000) and not mask4.any()


def test_pipeline_state_round_trip_and_short_records():
    pipe = ECGPipeline(fs=250, duration_s=4, bandpass=(0.5, 100.0), baseline="highpass", crop="start")
    again = ECGPipeline.from_state_dict(pipe.state_dict())
    ecg = ecg_from_array(np.random.default_rng(0).standard_normal((12, 1500)), 500)  # 3 s
    a, _ = pipe(ecg)
    b, _ = again(ecg)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (12, 1000) and np.all(a[:, 750:] == 0)  # padded after 3 s
    with pytest.raises(ConfigError, match="unknown ECGPipeline settings"):
        ECGPipeline.from_state_dict({"fs": 100, "sampling": 3})
    with pytest.raises(ConfigError, match="standardize"):
        ECGPipeline(standardize="global")


@pytest.mark.realdata
def test_pipeline_stacks_ptbxl_index_paths(shared_data):
    from biomodal.io import read_ptbxl_index

    index = read_ptbxl_index(shared_data / "ecg" / "ptbxl", sampling_rate=500).iloc[:5]
    pipe = ECGPipeline(fs=100)
    x, m = pipe.stack(index["path"])
    assert x.shape == (5, 12, 1000) and m.shape == (5, 12) and m.all()
    one, _ = pipe(read_wfdb(index["path"].iloc[3]))
    np.testing.assert_array_equal(x[3], one)
    empty, _ = pipe.stack([])
    assert empty.shape == (0, 12, 1000)
