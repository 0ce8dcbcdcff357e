"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Every writer in biomodal that replaces a file (checkpoints, metrics, logs, caches,
AnnData outputs) goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder, flushed to disk (``fsync``), and then
moved onto the destination with :func:`os.replace`, which is atomic on POSIX and
Windows when both paths are on one file system. On an exception the temporary
file is removed and the destination is left as it was. A process killed half-way
leaves at most a hidden ``.<name>.<token>.tmp`` file beside the destination, never
a truncated destination.

This module is at the lowest layer: it imports nothing from biomodal and no
third-party package, so readers, caches and the trainer can all use it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "publish_folder", "temp_path_for"]


def temp_path_for(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """Return a fresh hidden temporary path beside ``path``.

    Parameters
    ----------
    path
        The destination file.
    suffix
        Ending of the temporary name; ``None`` keeps the destination's own suffix, so
        writers that add or check an extension (``numpy.save``, ``write_h5ad``) accept it.

    Returns
    -------
    pathlib.Path
        ``<folder>/.<name>.<token>.tmp<suffix>``; the token is unique per call.
    """
    path = Path(path)
    end = path.suffix if suffix is None else suffix
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{end}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on a read-only handle
        pass
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path, overwrite: bool) -> bool:
    """Move ``tmp`` onto ``path``; with ``overwrite=False`` keep an existing ``path``."""
    if overwrite:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # atomic and fails if another writer published first: keep theirs
        return True
    except FileExistsError:
        return False
    except OSError:  # file systems without hard links
        if path.exists():
            return False
        os.replace(tmp, path)
        return True


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    suffix: str | None = None,
    *,
    overwrite: bool = True,
    fsync: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    Write the file at the yielded path (``torch.save(obj, tmp)``,
    ``adata.write_h5ad(tmp)``, ``np.lib.format.open_memmap(tmp, ...)``, ``open(tmp, "w")``).
    When the block exits normally the file is fsync'ed and moved onto ``path``
    with :func:`os.replace`; when it raises, the temporary file is removed and
    ``path`` is untouched.

    Parameters
    ----------
    path
        The destination file; its folder is created when missing.
    suffix
        Ending of the temporary name (default: the destination's suffix), for writers
        that insist on an extension.
    overwrite
        ``False`` publishes only when ``path`` does not exist yet, without a window in
        which two concurrent writers clobber each other (hard link, then unlink): the
        first writer wins and the others' files are discarded.
    fsync
        Flush the file and the folder entry to disk (turn off only for scratch files).

    Yields
    ------
    pathlib.Path
        The temporary path to write.

    Raises
    ------
    FileNotFoundError
        The block finished without creating the temporary file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "metrics.json"
    >>> with atomic_path(dest) as tmp:
    ...     _ = tmp.write_text("{}")
    >>> dest.read_text()
    '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path, suffix)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic write of {path}: nothing was written to the temporary file {tmp}"
            )
        if fsync:
            _fsync_file(tmp)
        _publish(tmp, path, overwrite)
        if fsync:
            _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes, *, overwrite: bool = True, fsync: bool = True
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path
        Destination file.
    data
        The complete new content.
    overwrite
        ``False`` keeps an existing ``path`` (first writer wins).
    fsync
        Flush to disk before the rename.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path, overwrite=overwrite, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike,
    text: str,
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
    overwrite: bool = True,
    fsync: bool = True,
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path
        Destination file.
    text
        The complete new content.
    encoding
        Text encoding.
    newline
        Passed to :func:`open` (``""`` writes line endings untranslated, as :mod:`csv` wants).
    overwrite
        ``False`` keeps an existing ``path`` (first writer wins).
    fsync
        Flush to disk before the rename.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path, overwrite=overwrite, fsync=fsync) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as fh:
            fh.write(text)
    return Path(path)


def publish_folder(staging: Path, out: Path) -> None:
    """Move a complete generated folder onto ``out`` (a rename; file by file into an existing folder).

    Into an existing folder the data files move first and ``manifest.csv`` last, so a reader
    never finds a manifest naming files that are not there yet.
    """
    if not out.exists():
        try:
            os.replace(staging, out)
            return
        except OSError:  # another writer published first: move file by file into theirs
            if not out.is_dir():
                raise
    last = ("README.md", "generation.json", "manifest.csv")
    names = sorted(p.name for p in staging.iterdir())
    for name in [n for n in names if n not in last] + [n for n in last if n in names]:
        os.replace(staging / name, out / name)
