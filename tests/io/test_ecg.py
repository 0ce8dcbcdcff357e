"""ECG readers (WFDB, DICOM waveform, arrays) on the real files and on broken copies."""

from __future__ import annotations

import re

import numpy as np
import pytest

from biomodal.errors import DataError, ReaderError
from biomodal.io import (
    ECG,
    STANDARD_LEADS,
    ecg_from_array,
    find_reader,
    normalize_lead_name,
    read,
    read_ecg_dicom,
    read_wfdb,
)
from tests.io.ecg_helpers import synthetic_ecg, write_record

WFDB_DIR = ("ecg", "wfdb")


def _raw_int16(dat, n_sig, gain, baseline=0.0):
    """Independent decode of a format-16 file: little-endian int16, frames of n_sig samples."""
    d = np.fromfile(dat, dtype="<i2").reshape(-1, n_sig).T.astype(np.float64)
    return (d - baseline) / gain


# --------------------------------------------------------------------------- real WFDB records
@pytest.mark.realdata
@pytest.mark.parametrize("rate,suffix,n", [(100, "lr", 1000), (500, "hr", 5000)])
def test_ptbxl_record_matches_independent_decode(shared_data, rate, suffix, n):
    base = shared_data / "ecg" / "ptbxl" / f"records{rate}" / "00000" / f"00001_{suffix}"
    ecg = read_wfdb(base)
    assert isinstance(ecg, ECG) and ecg.signal.dtype == np.float32
    assert ecg.leads == STANDARD_LEADS and ecg.raw_leads[3] == "AVR"
    assert ecg.fs == rate and ecg.signal.shape == (12, n) and ecg.duration_s == pytest.approx(10.0)
    ref = _raw_int16(base.with_suffix(".dat"), 12, 1000.0)
    np.testing.assert_allclose(ecg.signal, ref, atol=1e-6)
    assert 0.05 < np.abs(ecg.signal).max() < 10  # millivolts, not microvolts or ADC units


@pytest.mark.realdata
def test_mitbih_212_format_and_modified_lead_names(shared_data):
    import wfdb

    base = shared_data.joinpath(*WFDB_DIR, "100")
    ecg = read(f"{base}.hea")
    assert ecg.leads == ("II", "V5") and ecg.raw_leads == ("MLII", "V5")
    assert ecg.fs == 360 and ecg.n_samples == 650000
    ref = wfdb.rdrecord(str(base)).p_signal.T
    np.testing.assert_allclose(ecg.signal, ref, atol=1e-5)
    assert ecg.metadata["age"] == 69 and ecg.metadata["sex"] == "m"
    assert "Aldomet, Inderal" in ecg.metadata["comments"]
    # a bare record name works when the reader is named
    assert read(str(base), reader="wfdb").n_samples == 650000


@pytest.mark.realdata
def test_ptb_15_leads_lowercase_names_two_data_files(shared_data):
    base = shared_data.joinpath(*WFDB_DIR, "s0010_re")
    ecg = read_wfdb(f"{base}.dat")
    assert ecg.leads == (*STANDARD_LEADS, "VX", "VY", "VZ")
    assert ecg.raw_leads[:4] == ("i", "ii", "iii", "avr")
    assert ecg.fs == 1000 and ecg.n_samples == 38400
    np.testing.assert_allclose(ecg.signal[:12], _raw_int16(f"{base}.dat", 12, 2000.0), atol=1e-6)
    np.testing.assert_allclose(ecg.signal[12:], _raw_int16(f"{base}.xyz", 3, 2000.0), atol=1e-6)
    assert ecg.metadata["age"] == 81 and ecg.metadata["sex"] == "female"
    np.testing.assert_allclose(ecg.lead("avl"), ecg.signal[4])


@pytest.mark.realdata
def test_four_unnamed_leads_at_500hz(shared_data):
    base = shared_data.joinpath(*WFDB_DIR, "test01_00s")
    ecg = read_wfdb(base)
    assert ecg.leads == ("ECG 1", "ECG 2", "ECG 3", "ECG 4") and ecg.fs == 500 and ecg.n_samples == 4000
    np.testing.assert_allclose(ecg.signal, _raw_int16(f"{base}.dat", 4, 100.0), atol=1e-6)
    assert ecg.metadata["age"] == 25 and ecg.metadata["sex"] == "m"
    sub = read_wfdb(base, channels=["ECG 2", 0], sampfrom=100, sampto=600)
    np.testing.assert_allclose(sub.signal, ecg.signal[[1, 0], 100:600])


@pytest.mark.realdata
def test_dicom_waveform_matches_raw_bytes(shared_data):
    import pydicom

    path = shared_data / "ecg" / "dicom" / "waveform_ecg.dcm"
    ecg = read(path)
    assert ecg.leads == STANDARD_LEADS and ecg.fs == 1000 and ecg.signal.shape == (12, 10000)
    ds = pydicom.dcmread(path)
    raw = np.frombuffer(ds.WaveformSequence[0].WaveformData, dtype="<i2").reshape(-1, 12).T
    np.testing.assert_allclose(ecg.signal, raw * 1.25 / 1000.0, atol=1e-6)  # 1.25 uV per unit -> mV
    assert ecg.metadata["groups"] == ["RHYTHM", "MEDIAN BEAT"] and ecg.metadata["units"][0] == "uV"
    median = read_ecg_dicom(path, group="MEDIAN BEAT")
    assert median.signal.shape == (12, 1200)
    with pytest.raises(DataError, match="no waveform group labelled 'BEAT'"):
        read_ecg_dicom(path, group="BEAT")


@pytest.mark.realdata
def test_registry_picks_the_ecg_readers(shared_data):
    assert find_reader(shared_data / "ecg" / "wfdb" / "100.hea") == "wfdb"
    assert find_reader(shared_data / "ecg" / "wfdb" / "100.dat") == "wfdb"
    assert find_reader(shared_data / "ecg" / "dicom" / "waveform_ecg.dcm") == "ecg_dicom"
    # an image, not a waveform: ecg_dicom declines it and the radiograph reader takes it
    assert find_reader(shared_data / "xray" / "dicom" / "RG1_J2KI.dcm") == "xray"


# --------------------------------------------------------------------------- names, units, arrays
def test_lead_names_are_normalised():
    got = [
        normalize_lead_name(n) for n in ("MLII", "avr", "AVF", "Lead I (Einthoven)", "MDC_ECG_LEAD_V3", "MV5")
    ]
    assert got == ["II", "aVR", "aVF", "I", "V3", "V5"]
    assert normalize_lead_name(" ECG 1 ") == "ECG 1" and normalize_lead_name("vz") == "VZ"


def test_microvolt_records_are_converted(tmp_path):
    sig = synthetic_ecg(2, 1000, 250.0)
    write_record(tmp_path, "uv", sig * 1000.0, 250, ["i", "ii"], units="uV", gain=1.0)
    ecg = read_wfdb(tmp_path / "uv")
    assert ecg.metadata["units"] == ["uV", "uV"] and ecg.leads == ("I", "II")
    np.testing.assert_allclose(ecg.signal, sig.T, atol=1e-3)


def test_non_voltage_channel_is_an_error_or_dropped(tmp_path):
    sig = synthetic_ecg(2, 500, 250.0)
    write_record(tmp_path, "bp", sig, 250, ["II", "ABP"], units=["mV", "mmHg"])
    with pytest.raises(DataError, match=r"bp\.hea: channel 'ABP' is in 'mmHg', not a voltage"):
        read_wfdb(tmp_path / "bp")
    assert read_wfdb(tmp_path / "bp", non_voltage="drop").leads == ("II",)


def test_arrays_and_npz(tmp_path):
    sig = synthetic_ecg(12, 2000, 500.0)  # (samples, leads)
    ecg = ecg_from_array(sig * 1000, 500, units="uV")  # layout found from the shape
    assert ecg.signal.shape == (12, 2000) and ecg.leads == STANDARD_LEADS
    np.testing.assert_allclose(ecg.signal, sig.T, atol=1e-4)
    assert "12 leads" in repr(ecg) and "500 Hz" in repr(ecg)
    np.savez(tmp_path / "a.npz", signal=sig.T, fs=500.0, leads=np.array(["MLII", *STANDARD_LEADS[1:]]))
    back = read(tmp_path / "a.npz")
    assert back.leads[0] == "II" and back.raw_leads[0] == "MLII"
    with pytest.raises(DataError, match="11 lead names for 12"):
        ECG(sig.T, fs=500, leads=STANDARD_LEADS[:11])


# --------------------------------------------------------------------------- bad inputs
@pytest.fixture
def record(tmp_path):
    sig = synthetic_ecg(4, 4000, 500.0)
    return write_record(tmp_path, "rec", sig, 500, ["I", "II", "V1", "V2"])


def _edit_header(base, fn):
    hea = base.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(fn(lines)) + "\n")


def test_truncated_dat_names_file_and_record(record):
    dat = record.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:10000])
    with pytest.raises(ReaderError) as err:
        read_wfdb(record)
    msg = str(err.value)
    assert err.value.path == str(dat) and "truncated" in msg and "record 'rec'" in msg
    assert "4000 samples" in msg and "only 1250 of 4000 samples" in msg


def test_header_signal_count_disagrees_with_signal_lines(record):
    _edit_header(record, lambda ls: [re.sub(r"^rec 4", "rec 5", ls[0]), *ls[1:]])
    with pytest.raises(ReaderError, match=r"rec\.hea: the record line declares 5 signals but 4 signal lines"):
        read_wfdb(record)


def test_header_with_fewer_signals_than_the_data(record):
    _edit_header(record, lambda ls: [re.sub(r"^rec 4", "rec 3", ls[0]), *ls[1:4]])
    with pytest.raises(ReaderError, match=r"rec\.dat: .*more than the 24000 that rec\.hea describes"):
        read_wfdb(record)


@pytest.mark.parametrize("length,match", [(8000, "truncated"), (2000, "more than the")])
def test_header_length_disagrees_with_data(record, length, match):
    _edit_header(record, lambda ls: [re.sub(r"^rec 4 500 4000", f"rec 4 500 {length}", ls[0]), *ls[1:]])
    with pytest.raises(ReaderError, match=match):
        read_wfdb(record)


def test_checksum_mismatch_is_reported(record):
    dat = record.with_suffix(".dat")
    raw = bytearray(dat.read_bytes())
    raw[2:4] = (int.from_bytes(raw[2:4], "little", signed=True) + 7).to_bytes(2, "little", signed=True)
    dat.write_bytes(bytes(raw))  # sample 0 of signal II changed, size unchanged
    with pytest.raises(ReaderError, match=r"checksum of signal 'II'.*record 'rec'"):
        read_wfdb(record)
    assert read_wfdb(record, verify=False).n_samples == 4000


def test_missing_header_and_data_file(tmp_path, record):
    with pytest.raises(ReaderError, match="WFDB header not found"):
        read_wfdb(tmp_path / "nope")
    record.with_suffix(".dat").unlink()
    with pytest.raises(ReaderError, match=r"rec\.dat: data file of record 'rec' is missing"):
        read_wfdb(record)


def test_dicom_without_waveform_data(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "OT"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(16)
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ReaderError, match=r"image\.dcm: no waveform data.*Secondary Capture"):
        read_ecg_dicom(path)
    assert find_reader(path) == "xray"  # ecg_dicom declines the image; the radiograph reader takes it
    assert read(path).shape == (4, 4)
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(ReaderError, match=r"junk\.dcm: not a readable DICOM"):
        read_ecg_dicom(bad)


@pytest.mark.realdata
def test_real_dicom_image_is_not_a_waveform(shared_data):
    src = shared_data / "xray" / "dicom" / "RG1_J2KI.dcm"
    with pytest.raises(ReaderError, match=r"RG1_J2KI\.dcm: no waveform data.*Computed Radiography"):
        read_ecg_dicom(src)
