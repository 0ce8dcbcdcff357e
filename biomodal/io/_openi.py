"""OpenI (Indiana University chest X-ray collection) XML reports -> :class:`~biomodal.io.Report`."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from biomodal.errors import DataError, ReaderError
from biomodal.io._reports import SECTION_ALIASES, Report, split_sections

__all__ = ["is_openi_xml", "read_openi_xml"]


def is_openi_xml(path: Path) -> bool:
    """Accept an XML file whose root element is an OpenI <eCitation>."""
    with open(path, "rb") as fh:
        return b"<eCitation" in fh.read(2048)


def read_openi_xml(path: str | os.PathLike, *, strict: bool = True) -> Report:
    """Read an OpenI XML report: ``AbstractText`` sections, MeSH terms and image ids.

    Section labels (``COMPARISON``, ``INDICATION``, ``FINDINGS``, ``IMPRESSION``) are mapped to
    the canonical names of :data:`~biomodal.io.SECTION_ALIASES`; an unlabelled abstract is split
    with :func:`~biomodal.io.split_sections`. Empty sections are left out. Text is kept as
    written (placeholders included): apply :func:`~biomodal.io.normalize_report` or
    :meth:`Report.text <biomodal.io.Report.text>`.

    Parameters
    ----------
    path
        The ``.xml`` file.
    strict
        Raise when every section is empty (2 of the 600 IU reports in ``../shared``);
        otherwise return a report without sections.

    Returns
    -------
    Report
        ``id`` (``uId``, e.g. ``"CXR1"``), ``sections``, ``mesh`` (``{"major": [...],
        "automatic": [...]}``), ``images`` (``parentImage`` ids) and ``metadata``
        (licence, date, image captions).

    Raises
    ------
    ReaderError
        Not well-formed XML, or not an OpenI ``eCitation``.
    DataError
        ``strict`` and no non-empty recognisable section (the message names the file and id).
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ReaderError(p, f"not a well-formed XML report ({exc})") from exc
    if root.tag != "eCitation":
        raise ReaderError(p, f"not an OpenI report: root element <{root.tag}>, expected <eCitation>")
    uid = root.find("uId")
    rid = uid.get("id") if uid is not None else p.stem
    known = {a.lower(): k for k, names in SECTION_ALIASES.items() for a in (k, *names)}
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        body = " ".join("".join(node.itertext()).split())
        label = (node.get("Label") or "").strip()
        if not body:
            continue
        if not label:
            for k, v in split_sections(body, source=p, strict=False).items():
                sections[k] = f"{sections[k]} {v}" if k in sections else v
            continue
        key = known.get(label.lower(), label.upper())
        sections[key] = f"{sections[key]} {body}" if key in sections else body
    if strict and not sections:
        raise DataError(
            f"{p}: report {rid!r} has no recognisable section: every AbstractText (COMPARISON, INDICATION, "
            "FINDINGS, IMPRESSION) is empty or absent; pass strict=False to keep it without text"
        )
    mesh: dict[str, list[str]] = {}
    m = root.find("MeSH")
    if m is not None:
        for term in m:
            if term.text and term.text.strip():
                mesh.setdefault(term.tag, []).append(term.text.strip())
    images = [im.get("id") for im in root.iter("parentImage") if im.get("id")]
    captions = [(im.findtext("caption") or "").strip() for im in root.iter("parentImage")]
    meta = {
        "licence": (root.findtext("licenseURL") or "").strip() or None,
        "date": (root.findtext("articleDate") or "").strip() or None,
        "captions": captions,
    }
    return Report(sections, id=rid, path=str(p), mesh=mesh, images=images, metadata=meta)
