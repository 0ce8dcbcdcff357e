"""Exception types raised by biomodal.

Every error a user can trigger with bad input derives from :class:`BiomodalError`
so notebooks can catch them in one place; messages name the offending file, key
or value and say what was expected.
"""

from __future__ import annotations

import os

__all__ = [
    "BiomodalError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MissingDependencyError",
    "MissingMetadataError",
    "ReaderError",
    "UnsupportedFormatError",
]


class BiomodalError(Exception):
    """Base class of all biomodal errors."""


class ReaderError(BiomodalError, OSError):
    """A file could not be read; ``path`` is the offending file.

    Parameters
    ----------
    path
        The file or folder that failed.
    message
        What went wrong and what was expected.
    """

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        self.path = os.fspath(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")

    def __str__(self) -> str:  # OSError would otherwise format errno fields
        return f"{self.path}: {self.reason}"


class UnsupportedFormatError(ReaderError):
    """The file exists but is not in a format the reader supports."""


class MissingMetadataError(BiomodalError, ValueError):
    """Metadata needed for an operation (e.g. microns per pixel) is absent."""


class DataError(BiomodalError, ValueError):
    """Data content is invalid (negative counts, duplicated genes, empty sections...)."""


class ConfigError(BiomodalError, ValueError):
    """A recipe or configuration value is invalid; the message names the key."""


class CheckpointError(BiomodalError, ValueError):
    """A checkpoint is missing, corrupt or incompatible with the data given."""


class MissingDependencyError(BiomodalError, ImportError):
    """An optional dependency is not installed; the message names the extra."""
