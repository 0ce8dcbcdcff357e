"""Registrations of the clinical readers: ECG (WFDB, DICOM waveform, .npz), reports, labs, PTB-XL.

Imported by :mod:`biomodal.io._builtin_readers`. As there, each entry is a shim that
imports its module on the first call, and the content checks read a few bytes only,
so registering imports neither numpy, pandas, wfdb nor pydicom.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from biomodal.io.registry import _check_options, register_reader


def _is_wfdb(path: Path) -> bool:
    """Accept a WFDB header (<record>.hea whose record line names the record) or a .dat beside one."""
    if path.suffix.lower() == ".dat":
        path = path.with_suffix(".hea")
        if not path.is_file():
            return False
    with open(path, "rb") as fh:
        head = fh.read(4096).decode("latin-1")
    for line in head.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.split()[0].split("/")[0] == path.stem
    return False


def _is_dicom_waveform(path: Path) -> bool:
    """Accept a DICOM file ('DICM' at byte 128) whose SOP class is a waveform storage class."""
    from biomodal.io._ecg_dicom import is_dicom_waveform

    return is_dicom_waveform(path)


def _is_ecg_npz(path: Path) -> bool:
    """Accept a .npz holding 'signal' and 'fs' arrays."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    return {"signal.npy", "fs.npy"} <= names


def _is_openi(path: Path) -> bool:
    """Accept an XML file whose root element is an OpenI <eCitation>."""
    with open(path, "rb") as fh:
        return b"<eCitation" in fh.read(2048)


def _is_ptbxl(path: Path) -> bool:
    """Accept a folder holding ptbxl_database.csv and scp_statements.csv."""
    return (
        path.is_dir() and (path / "ptbxl_database.csv").is_file() and (path / "scp_statements.csv").is_file()
    )


@register_reader(
    "wfdb",
    suffixes=(".hea", ".dat"),
    kind="ecg",
    claims=_is_wfdb,
    must_exist=False,
    description="WFDB (PhysioNet) ECG record (.hea + .dat) -> ECG, (leads, samples) in mV",
)
def read_wfdb_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a WFDB record with :func:`biomodal.io.read_wfdb` (``"dir/100"``, ``.hea`` or ``.dat``)."""
    from biomodal.io._wfdb import read_wfdb

    _check_options(read_wfdb, "wfdb", kwargs)
    return read_wfdb(path, **kwargs)


@register_reader(
    "ecg_dicom",
    suffixes=(".dcm",),
    kind="ecg",
    claims=_is_dicom_waveform,
    priority=1,
    description="DICOM waveform ECG (pydicom) -> ECG in mV; declines DICOM images",
)
def read_ecg_dicom_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a DICOM waveform with :func:`biomodal.io.read_ecg_dicom` (options: ``group``)."""
    from biomodal.io._ecg_dicom import read_ecg_dicom

    _check_options(read_ecg_dicom, "ecg_dicom", kwargs)
    return read_ecg_dicom(path, **kwargs)


@register_reader(
    "ecg_npz",
    suffixes=(".npz",),
    kind="ecg",
    claims=_is_ecg_npz,
    description="ECG saved as .npz (signal, fs, optional leads and units) -> ECG in mV",
)
def read_ecg_npz_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read an ECG ``.npz`` with :func:`biomodal.io.read_ecg_npz`."""
    from biomodal.io._ecg import read_ecg_npz

    _check_options(read_ecg_npz, "ecg_npz", kwargs)
    return read_ecg_npz(path, **kwargs)


@register_reader(
    "openi_xml",
    suffixes=(".xml",),
    kind="report",
    claims=_is_openi,
    description="OpenI / IU X-ray XML report -> Report (sections, MeSH terms, image ids)",
)
def read_openi_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read an OpenI XML report with :func:`biomodal.io.read_openi_xml`."""
    from biomodal.io._openi import read_openi_xml

    _check_options(read_openi_xml, "openi_xml", kwargs)
    return read_openi_xml(path, **kwargs)


@register_reader(
    "report_text",
    suffixes=(".txt",),
    kind="report",
    description="plain-text clinical report (MIMIC-CXR style) -> Report split into sections",
)
def read_report_text_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a text report with :func:`biomodal.io.read_report_text`."""
    from biomodal.io._reports import read_report_text

    _check_options(read_report_text, "report_text", kwargs)
    return read_report_text(path, **kwargs)


@register_reader(
    "labs",
    kind="labs",
    description="table of clinical values (CSV/TSV/Parquet) -> LabTable (by name only: CSV is too common)",
)
def read_labs_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a table of clinical values with :func:`biomodal.io.read_labs`."""
    from biomodal.io._labs import read_labs

    _check_options(read_labs, "labs", kwargs)
    return read_labs(path, **kwargs)


@register_reader(
    "ptbxl",
    kind="ecg_index",
    claims=_is_ptbxl,
    folders=True,
    description="PTB-XL folder -> record index DataFrame (paths, strat_fold, labels, report, labs)",
)
def read_ptbxl_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a PTB-XL folder's index with :func:`biomodal.io.read_ptbxl_index`."""
    from biomodal.io._ptbxl import read_ptbxl_index

    _check_options(read_ptbxl_index, "ptbxl", kwargs)
    return read_ptbxl_index(path, **kwargs)
