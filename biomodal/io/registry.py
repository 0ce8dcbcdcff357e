"""The reader registry: ``read(path)``, ``find_reader``, ``list_readers``, ``@register_reader``.

Readers behave like MONAI's ``ImageReader``: each one declares the suffixes it
reads and, where a suffix is ambiguous, a cheap content check. :func:`read`
picks the reader, so no caller needs an ``if/elif`` on a format string:

* ``reader="name"`` chooses one explicitly (an unknown name is a
  :class:`~biomodal.errors.ConfigError` with a did-you-mean hint);
* otherwise, for a **file**, readers whose suffix ends the file name are tried,
  longest suffix first (so ``.nii.gz`` beats ``.gz``), then higher ``priority``,
  then registration order; the first whose content check (if any) accepts the
  file wins;
* a **directory** is matched by content checks only (a Visium ``outs`` folder,
  a Xenium run folder).

Registering costs nothing: no heavy backend (torch, openslide, scanpy,
anndata) is imported until a reader actually runs, so this module keeps
``import biomodal`` fast.

Adding a reader
---------------
Write one module, e.g. ``biomodal/io/dicom.py``, whose read function takes the
path first and imports its backend lazily, and decorate it::

    from biomodal.io.registry import register_reader

    def _is_dicom(path):
        '''Accept files with the 'DICM' magic at byte 128.'''
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"

    @register_reader("dicom", suffixes=(".dcm",), kind="xray", claims=_is_dicom,
                     description="DICOM image or waveform (pydicom)")
    def read_dicom(path, *, frame=None): ...

then add ``"dicom"`` to :data:`BUILTIN_MODULES` below so that the built-in
registry imports it. A content check's docstring says what it accepts (its
first line appears in error messages). Readers defined outside biomodal
register the same way; they are available once their module is imported.

Built-in readers
----------------
Registered in :mod:`biomodal.io._builtin_readers`:
``slide`` (SVS, TIFF, NDPI, MRXS, SCN, SVSlide, BIF, PNG, JPEG: :func:`~biomodal.io.read_slide`),
``visium`` (Space Ranger folder or its ``*_feature_bc_matrix.h5``),
``xenium`` (Xenium folder, its ``experiment.xenium`` or ``cell_feature_matrix.h5``),
``h5ad`` (:func:`~biomodal.io.read_h5ad`) and ``legacy_st``, which needs three files
(counts, spots, image) and so claims nothing: it is reached by name only, as
``read(counts, reader="legacy_st", spots=..., image=...)``.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from biomodal._registry import Registry
from biomodal.errors import ConfigError, DataError

__all__ = [
    "BUILTIN_MODULES",
    "ReaderRegistry",
    "find_reader",
    "get_reader",
    "list_readers",
    "read",
    "reader_info",
    "register_reader",
    "unregister_reader",
]

#: Modules of ``biomodal.io`` imported at the end of this file; each registers its readers.
BUILTIN_MODULES: tuple[str, ...] = ("_builtin_readers",)

ReadFn = Callable[..., Any]
ClaimFn = Callable[[Path], bool]
_COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".zip"}


def _suffix_of(path: Path) -> str:
    """Return the suffix shown in messages: ``.svs``, ``.tsv.gz`` (compression kept), or ``''``."""
    if path.suffix.lower() in _COMPRESSED and len(path.suffixes) >= 2:
        return "".join(path.suffixes[-2:]).lower()
    return path.suffix.lower()


def _check_claims(claims: ClaimFn, path: Path) -> bool:
    """Run a content check; unreadable files count as not claimed."""
    try:
        return bool(claims(path))
    except (OSError, ValueError):
        return False


def _first_line(fn: Callable[..., Any] | None) -> str | None:
    """First docstring line of a content check, lower-cased and without its period."""
    doc = inspect.getdoc(fn) if fn is not None else None
    if not doc:
        return None
    line = doc.splitlines()[0].rstrip(".")
    return line[:1].lower() + line[1:]


def _check_options(fn: ReadFn, name: str, kwargs: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``kwargs`` holds options ``fn`` does not take.

    The first parameter (the path) is not an option; functions taking ``**kwargs``
    accept everything.
    """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params[1:] if p.kind is not p.VAR_POSITIONAL]
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise ConfigError(f"reader {name!r} does not accept {bad}; allowed options: {allowed}")


class ReaderRegistry(Registry[Any]):
    """Readers by name, with the suffixes and content checks used to pick one for a file.

    Built on :class:`biomodal._registry.Registry` (names, metadata, did-you-mean);
    the module-level functions of :mod:`biomodal.io.registry` use one shared instance.
    A fresh instance is empty, which tests use to avoid touching the shared one.

    Examples
    --------
    >>> reg = ReaderRegistry()
    >>> @reg.register_reader("txt", suffixes=(".txt",), kind="text")
    ... def read_txt(path):
    ...     return open(path).read()
    >>> reg.names()
    ['txt']
    """

    def __init__(self) -> None:
        super().__init__("reader")
        self._order = 0

    def register_reader(
        self,
        name: str,
        *,
        suffixes: Sequence[str] = (),
        kind: str = "other",
        description: str = "",
        claims: ClaimFn | None = None,
        priority: int = 0,
        must_exist: bool = True,
        folders: bool = False,
    ) -> Callable[[ReadFn], ReadFn]:
        """Register a read function ``fn(path, **options)`` under ``name``.

        Parameters
        ----------
        name
            Registry name, used as ``read(path, reader=name)``.
        suffixes
            File-name endings the reader claims (case-insensitive, with the dot;
            multi-part endings such as ``".nii.gz"`` work). Empty: never picked by suffix.
        kind
            What the reader returns, e.g. ``"slide"``, ``"spatial"``, ``"ecg"``.
        description
            One line shown by :func:`reader_info` and in error messages.
        claims
            Content check ``claims(path) -> bool`` for ambiguous suffixes and folders.
            Its docstring's first line says what it looks for (shown in errors);
            ``OSError``/``ValueError`` raised by it count as ``False``.
        priority
            Among readers claiming equally long suffixes, higher is tried first
            (ties: registration order).
        must_exist
            Whether :func:`read` checks that the path exists before calling the reader
            (``False`` for readers taking record names, e.g. WFDB ``"100"``).
        folders
            Whether the reader reads folders; a folder is offered only to such readers,
            and only ``claims`` (required then) decides.

        Returns
        -------
        Callable
            A decorator that registers and returns the function unchanged.

        Raises
        ------
        ValueError
            ``name`` is already registered, a suffix does not start with ``"."``, or
            ``folders=True`` without ``claims``.
        """
        norm = tuple(s.lower() for s in suffixes)
        bad = [s for s in norm if not s.startswith(".") or len(s) < 2]
        if bad:
            raise ValueError(f"reader {name!r}: suffixes must start with '.', got {bad}")
        if folders and claims is None:
            raise ValueError(f"reader {name!r}: folders=True needs a claims= content check")
        self._order += 1
        return self.register(
            name,
            suffixes=norm,
            kind=kind,
            description=description,
            claims=claims,
            priority=int(priority),
            must_exist=bool(must_exist),
            folders=bool(folders),
            order=self._order,
        )

    def unregister(self, name: str) -> None:
        """Remove reader ``name`` (unknown names raise :class:`ConfigError`)."""
        self._resolve(name)
        del self._factories[name], self._meta[name]

    def info(self, name: str) -> dict[str, Any]:
        """Public description of reader ``name``: suffixes, kind, description, content check..."""
        m = self.meta(name)
        return {
            "name": name,
            "suffixes": m["suffixes"],
            "kind": m["kind"],
            "description": m["description"],
            "content_check": _first_line(m["claims"]),
            "priority": m["priority"],
            "must_exist": m["must_exist"],
            "folders": m["folders"],
        }

    def names(self, kind: str | None = None) -> list[str]:
        """Sorted reader names, optionally only those of ``kind``."""
        return sorted(n for n in self._factories if kind is None or self._meta[n]["kind"] == kind)

    def _candidates(self, path: Path) -> list[tuple[str, ClaimFn | None]]:
        """Readers to try for ``path``, best first (see the module docstring)."""
        if path.is_dir():
            entries = [(0, m, n) for n, m in self._meta.items() if m["folders"]]
        else:
            fname = path.name.lower()
            entries = []
            for n, m in self._meta.items():
                hits = [len(s) for s in m["suffixes"] if fname.endswith(s) and len(fname) > len(s)]
                if hits:
                    entries.append((max(hits), m, n))
        entries.sort(key=lambda e: (-e[0], -e[1]["priority"], e[1]["order"]))
        return [(n, m["claims"]) for _, m, n in entries]

    def _require(self, path: str | os.PathLike) -> Path:
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"{p}: no such file or directory (expected an existing file or folder to read)")
        return p

    def find(self, path: str | os.PathLike) -> str:
        """Name of the reader :meth:`read` would use for ``path``.

        Raises
        ------
        DataError
            ``path`` does not exist, or no reader claims it (the message lists the
            suffixes and content checks available).
        """
        p = self._require(path)
        declined = []
        for name, claims in self._candidates(p):
            if claims is None or _check_claims(claims, p):
                return name
            declined.append(f"{name} ({_first_line(claims) or 'content check'})")
        if p.is_dir():
            checks = [f"{n} ({_first_line(m['claims'])})" for n, m in self._meta.items() if m["folders"]]
            raise DataError(
                f"{p}: no reader recognises this folder; the folder readers' checks: "
                f"{'; '.join(checks) or 'none registered'}. Pass reader= to choose one."
            )
        suffix = _suffix_of(p) or "no suffix"
        table = "; ".join(
            f"{n} ({', '.join(m['suffixes']) if m['suffixes'] else 'by name only'})"
            for n, m in sorted(self._meta.items())
        )
        why = f" Suffix matched but the content was declined by: {', '.join(declined)}." if declined else ""
        raise DataError(
            f"{p}: no reader claims this file (suffix {suffix!r}).{why} "
            f"Readers and their suffixes: {table}. Pass reader= to choose one."
        )

    def read(self, path: str | os.PathLike, *, reader: str | None = None, **kwargs: Any) -> Any:
        """Read ``path`` with ``reader`` (by name) or with the reader that claims it.

        See :func:`biomodal.io.registry.read`.
        """
        if reader is None:
            reader = self.find(path)
        fn = self.get(reader)
        if self._meta[reader]["must_exist"]:
            self._require(path)
        _check_options(fn, reader, kwargs)
        return fn(path, **kwargs)


_READERS = ReaderRegistry()


#: Register a read function in the shared registry; see :meth:`ReaderRegistry.register_reader`.
register_reader = _READERS.register_reader
#: Remove a reader from the shared registry (tests, notebook re-runs); see :meth:`ReaderRegistry.unregister`.
unregister_reader = _READERS.unregister


def get_reader(name: str) -> ReadFn:
    """Return the read function registered as ``name`` (called as ``fn(path, **options)``).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the readers and suggests the closest.
    """
    return _READERS.get(name)


def find_reader(path: str | os.PathLike) -> str:
    """Name of the reader :func:`read` would use for ``path``.

    Raises
    ------
    DataError
        ``path`` does not exist or no reader claims it.
    """
    return _READERS.find(path)


def list_readers(kind: str | None = None) -> list[str]:
    """Sorted names of the registered readers, optionally only those of ``kind`` (e.g. ``"spatial"``)."""
    return _READERS.names(kind)


def reader_info(name: str) -> dict[str, Any]:
    """Describe reader ``name``: ``suffixes``, ``kind``, ``description``, ``content_check``, ..."""
    return _READERS.info(name)


def read(path: str | os.PathLike, *, reader: str | None = None, **kwargs: Any) -> Any:
    """Read a file or folder with the reader that claims it (or the one named).

    Parameters
    ----------
    path
        File or folder to read.
    reader
        Registry name (see :func:`list_readers`); by default the reader is chosen
        from the suffix and, where a suffix is ambiguous or ``path`` is a folder,
        from the content.
    **kwargs
        Options of that reader (e.g. ``mpp=`` for ``slide``, ``image=`` for ``visium``).

    Returns
    -------
    Any
        Whatever the reader returns: a :class:`~biomodal.io.Slide` for ``slide``,
        an :class:`anndata.AnnData` for the spatial readers.

    Raises
    ------
    ConfigError
        Unknown ``reader`` (with a did-you-mean hint) or an option it does not accept.
    DataError
        ``path`` does not exist, or no reader claims it.

    Examples
    --------
    >>> slide = read("CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> adata = read("visium/outs", image="lowres")  # doctest: +SKIP
    >>> adata = read(
    ...     "C2/counts.tsv.gz", reader="legacy_st", spots="C2/spots.tsv", image="C2/image.jpg"
    ... )  # doctest: +SKIP
    """
    return _READERS.read(path, reader=reader, **kwargs)


for _mod in BUILTIN_MODULES:
    importlib.import_module(f"biomodal.io.{_mod}")
