"""Did-you-mean hints for unknown names (registries, modality names, config keys).

One helper so every "unknown X" error in biomodal reads the same:
``unknown loss 'clipp'; available: clip, siglip. Did you mean 'clip'?``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean", "unknown_message"]


def closest(name: object, choices: Iterable[object], *, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look like ``name``, best first.

    Parameters
    ----------
    name
        The name that was not found (converted with ``str``).
    choices
        The valid names.
    n
        How many suggestions at most.
    cutoff
        Similarity threshold in ``[0, 1]`` (:func:`difflib.get_close_matches`).

    Returns
    -------
    list of str
        The suggestions (possibly empty).
    """
    options = [str(c) for c in choices]
    text = str(name)
    found = difflib.get_close_matches(text, options, n=n, cutoff=cutoff)
    if not found and text.lower() != text:  # "Clip" -> "clip"
        lowered = {o.lower(): o for o in options}
        found = [
            lowered[m] for m in difflib.get_close_matches(text.lower(), list(lowered), n=n, cutoff=cutoff)
        ]
    return found


def did_you_mean(name: object, choices: Iterable[object], *, n: int = 1) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest of ``choices``, or ``""``.

    Parameters
    ----------
    name
        The name that was not found.
    choices
        The valid names.
    n
        How many suggestions to offer (``" Did you mean 'a' or 'b'?"``).

    Returns
    -------
    str
        The hint, with a leading space, ready to append to a sentence; empty when
        nothing is close.

    Examples
    --------
    >>> did_you_mean("histolgy", ["histology", "expression"])
    " Did you mean 'histology'?"
    >>> did_you_mean("zzz", ["histology"])
    ''
    """
    found = closest(name, choices, n=n)
    if not found:
        return ""
    return f" Did you mean {' or '.join(repr(f) for f in found)}?"


def unknown_message(kind: str, name: object, choices: Iterable[object], *, sort: bool = True) -> str:
    """Return the standard message for an unknown name.

    Parameters
    ----------
    kind
        What was looked up (``"loss"``, ``"encoder"``, ``"modality"``).
    name
        The name that was not found.
    choices
        The valid names (listed in the message).
    sort
        List the valid names sorted (``False`` keeps their order, for a fixed vocabulary).

    Returns
    -------
    str
        ``"unknown <kind> '<name>'; available: a, b.<hint>"``.

    Examples
    --------
    >>> unknown_message("loss", "clipp", ["siglip", "clip"])
    "unknown loss 'clipp'; available: clip, siglip. Did you mean 'clip'?"
    """
    options = [str(c) for c in choices]
    listed = ", ".join(sorted(options) if sort else options) or "none"
    return f"unknown {kind} {name!r}; available: {listed}.{did_you_mean(name, options)}"
