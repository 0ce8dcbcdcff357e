"""Registrations of the imaging readers: radiographs (DICOM, PNG, JPEG) and 3-D volumes.

Imported by :mod:`biomodal.io._builtin_readers`. Each entry is a shim that imports its module on
the first call; the content check reads the first 4 KiB only, so registering imports neither
numpy, pydicom nor PIL. PNG and JPEG are claimed by the ``slide`` reader when no reader is
named: read a radiograph stored that way with ``read(path, reader="xray")`` or
:func:`biomodal.io.read_xray`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from biomodal.io.registry import _check_options, register_reader

#: SOP classes of 2-D radiographs: CR, DX (presentation/processing), mammography, intra-oral,
#: secondary capture. A UID must end there (not be the prefix of another, e.g. ...1.1.12 or 1.1.128).
_RADIOGRAPH_SOP = re.compile(
    rb"1\.2\.840\.10008\.5\.1\.4\.1\.1\.(?:1|1\.1|1\.1\.1|1\.2|1\.2\.1|1\.3|1\.3\.1|7)(?![0-9.])"
)


def _is_dicom_radiograph(path: Path) -> bool:
    """Accept a DICOM file ('DICM' at byte 128) whose SOP class is a 2-D radiograph or secondary capture."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return head[128:132] == b"DICM" and _RADIOGRAPH_SOP.search(head) is not None


@register_reader(
    "xray",
    suffixes=(".dcm", ".dicom"),
    kind="xray",
    claims=_is_dicom_radiograph,
    description="radiograph (DICOM CR/DX with LUTs, windows, MONOCHROME1; or PNG/JPEG via reader='xray') "
    "-> XRay, float (H, W) in [0, 1]",
)
def read_xray_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a radiograph with :func:`biomodal.io.read_xray` (options: ``window``, ``frame``)."""
    from biomodal.io._xray import read_xray

    _check_options(read_xray, "xray", kwargs)
    return read_xray(path, **kwargs)


@register_reader(
    "volume",
    suffixes=(),
    kind="volume",
    description="3-D volume (NIfTI reoriented to RAS, DICOM series folder sorted by position, multi-frame "
    "DICOM) -> Volume, float (slices, rows, columns) with spacing in mm; by name only",
)
def read_volume_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a volume with :func:`biomodal.io.read_volume` (``read(path, reader="volume")``)."""
    from biomodal.io._volume import read_volume

    _check_options(read_volume, "volume", kwargs)
    return read_volume(path, **kwargs)
