"""Report text for generated patients: real IU chest X-ray sentences chosen by MeSH term.

:func:`sentence_pools` reads the OpenI (Indiana University) XML reports and sorts the
sentences of their FINDINGS and IMPRESSION sections into pools per finding:

* ``cardiomegaly``: *positive* sentences come from reports whose MeSH major terms include
  ``Cardiomegaly`` and that speak of the heart (``cardiomegaly``, ``heart size``, ``cardiac
  silhouette``...) without a negation; *negative* sentences speak of the heart in reports
  with MeSH ``normal`` ("heart size is normal");
* ``pleural_effusion``: likewise with MeSH ``Pleural Effusion`` and the word ``effusion``;
* ``filler``: sentences of ``normal`` reports that mention neither finding (bones,
  pneumothorax, comparison...).

A sentence that mentions de-identified words (``XXXX``) is kept with the placeholder
``___``. ECG findings are not in chest X-ray reports; their sentences (:data:`ECG_SENTENCES`)
are written in the SCP-ECG statements' wording. :data:`BUILTIN_XRAY` is a small hand-written
set used when the IU reports are not at hand (``data.reports: builtin``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from biomodal.errors import DataError

__all__ = ["BUILTIN_XRAY", "ECG_SENTENCES", "compose_reports", "sentence_pools"]

_KEYS = {
    "cardiomegaly": (
        ("Cardiomegaly",),
        re.compile(
            r"cardiomegal|heart size|cardiac silhouette|heart is|cardiac size|"
            r"enlarged heart|heart enlarg|cardiomediastinal"
        ),
    ),
    "pleural_effusion": (("Pleural Effusion",), re.compile(r"effusion")),
}
_NEG = re.compile(
    r"\b(no|not|without|negative|normal|resolved|clear|free|within normal|unremarkable|stable"
    r" normal)\b"
)
_FILLER_BAN = re.compile(
    r"heart|cardi|effusion|pleura|lung|opacit|consolidat|edema|atelecta|infiltrat|"
    r"pneumonia|nodul|mass|costophrenic|fluid|normal|negative|chest|no acute (?!bon|osse)"
)

BUILTIN_XRAY: dict[str, dict[str, list[str]]] = {
    "cardiomegaly": {
        "pos": [
            "the heart is enlarged.",
            "cardiomegaly.",
            "mild cardiomegaly is noted.",
            "the cardiac silhouette is enlarged.",
        ],
        "neg": [
            "heart size is normal.",
            "the cardiac silhouette is within normal limits.",
            "normal heart size.",
        ],
    },
    "pleural_effusion": {
        "pos": [
            "small left pleural effusion.",
            "bilateral pleural effusions.",
            "there is a right pleural effusion.",
            "blunting of the costophrenic angle consistent with effusion.",
        ],
        "neg": ["no pleural effusion.", "there is no pleural effusion.", "no effusion."],
    },
    "filler": {
        "pos": [
            "no pneumothorax.",
            "the osseous structures are intact.",
            "no acute bony abnormality.",
            "the mediastinum is unremarkable.",
        ],
        "neg": [],
    },
}

ECG_SENTENCES: dict[str, dict[str, list[str]]] = {
    "atrial_fibrillation": {
        "pos": [
            "atrial fibrillation.",
            "atrial fibrillation with rapid ventricular response.",
            "irregularly irregular rhythm without p waves, consistent with atrial fibrillation.",
        ],
        "neg": ["sinus rhythm.", "normal sinus rhythm.", "regular sinus rhythm."],
    },
    "myocardial_infarction": {
        "pos": [
            "old myocardial infarction.",
            "pathological q waves with t wave inversion, consistent with prior infarction.",
            "ecg evidence of a previous myocardial infarction.",
        ],
        "neg": ["no evidence of infarction.", "no pathological q waves.", "normal qrs and t waves."],
    },
}


def _sentences(text: str) -> list[str]:
    text = re.sub(r"x{2,}", "___", text, flags=re.IGNORECASE).lower()
    out = []
    for s in re.split(r"(?<=\.)\s*(?=[a-z_])", text):
        s = " ".join(s.split()).strip()
        if len(s) >= 8 and re.search(r"[a-z]{3}", s):
            out.append(s if s.endswith(".") else s + ".")
    return out


def sentence_pools(reports_dir: str | Path | None) -> dict[str, dict[str, list[str]]]:
    """Pools of positive/negative sentences per finding from IU XML reports (or the builtin set).

    Parameters
    ----------
    reports_dir
        Folder of OpenI ``.xml`` reports (searched recursively); ``None`` or ``"builtin"``:
        :data:`BUILTIN_XRAY`.

    Returns
    -------
    dict
        ``{finding: {"pos": [...], "neg": [...]}}`` for ``cardiomegaly``, ``pleural_effusion``
        and ``filler`` (``pos`` only), plus :data:`ECG_SENTENCES`.

    Raises
    ------
    DataError
        The folder does not exist, holds no XML report, or a pool comes out empty.
    """
    if reports_dir is None or str(reports_dir) == "builtin":
        return {**{k: {s: list(v) for s, v in p.items()} for k, p in BUILTIN_XRAY.items()}, **ECG_SENTENCES}
    from biomodal.io._openi import read_openi_xml

    root = Path(reports_dir)
    if not root.is_dir():
        raise DataError(
            f"data.reports: {root} is not a folder of IU X-ray XML reports "
            "(use data.reports: builtin for the hand-written sentences)"
        )
    files = sorted(root.rglob("*.xml"))
    if not files:
        raise DataError(f"data.reports: no .xml report under {root}")
    pools: dict[str, dict[str, set[str]]] = {k: {"pos": set(), "neg": set()} for k in (*_KEYS, "filler")}
    for f in files:
        rep = read_openi_xml(f, strict=False)
        major = {t.split("/")[0] for t in rep.mesh.get("major", [])}
        normal = "normal" in major
        text = " ".join(rep.sections.get(s, "") for s in ("FINDINGS", "IMPRESSION"))
        for s in _sentences(text):
            neg = bool(_NEG.search(s))
            for k, (terms, pat) in _KEYS.items():
                if not pat.search(s):
                    continue
                if any(t in major for t in terms) and not neg:
                    pools[k]["pos"].add(s)
                elif normal and neg:
                    pools[k]["neg"].add(s)
            if normal and not _FILLER_BAN.search(s) and 15 <= len(s) < 90:
                pools["filler"]["pos"].add(s)
    out = {k: {s: sorted(v) for s, v in p.items()} for k, p in pools.items()}
    empty = [
        f"{k}.{s}"
        for k, p in out.items()
        for s, v in p.items()
        if not v and not (k == "filler" and s == "neg")
    ]
    if empty:
        raise DataError(
            f"data.reports: {root}: no sentence found for {empty} (expected IU X-ray reports with "
            "MeSH terms Cardiomegaly, Pleural Effusion and normal)"
        )
    return {**out, **ECG_SENTENCES}


def compose_reports(
    findings: dict[str, np.ndarray],
    pools: dict[str, dict[str, list[str]]],
    *,
    mention: float = 0.85,
    seed: int | np.random.Generator = 0,
) -> list[str]:
    """One report per patient: a sentence per finding (positive or negative), a filler, shuffled.

    Parameters
    ----------
    findings
        ``{finding: (n,) 0/1}`` for findings that have a pool.
    pools
        :func:`sentence_pools`'s output.
    mention
        Probability that a finding is mentioned at all (a report that says nothing of a finding
        tells nothing of it either way); a positive finding is always mentioned when every
        finding would be left out.
    seed
        Seed or generator.

    Returns
    -------
    list of str
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    names = list(findings)
    n = len(findings[names[0]]) if names else 0
    out = []
    for i in range(n):
        parts = []
        for k in names:
            pos = bool(findings[k][i])
            if rng.random() < mention:
                pool = pools[k]["pos" if pos else "neg"]
                parts.append(pool[int(rng.integers(len(pool)))])
        if not parts:
            k = names[int(rng.integers(len(names)))]
            pool = pools[k]["pos" if findings[k][i] else "neg"]
            parts.append(pool[int(rng.integers(len(pool)))])
        filler = pools.get("filler", {}).get("pos", [])
        if filler:
            parts.append(filler[int(rng.integers(len(filler)))])
        rng.shuffle(parts)
        out.append(" ".join(parts))
    return out
