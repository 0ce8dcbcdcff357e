"""Generated data with higher-order structure: Symile's binary XOR experiment.

Saporta et al. (2024, "Contrasting with Symile", Section 5.1) draw binary vectors ``a`` and
``b`` with independent fair bits and set ``c = a XOR b`` (bit by bit). Then every pair of
``(a, b, c)`` is statistically independent, so a pairwise objective (CLIP) has nothing to
align, while the triple determines each of its members: only a higher-order objective
(Symile's multilinear inner product) can learn it.

:func:`make_xor` adds two knobs: ``noise`` flips each bit of ``c`` independently with that
probability (``c`` is then the XOR only up to noise, so even a perfect model misses some
items), and ``p_xor`` reproduces the paper's mixture ``c = (a XOR b)^i * a^(1 - i)`` with
``i ~ Bernoulli(p_xor)`` per item (``p_xor < 1`` adds pairwise information between ``a`` and
``c``).
"""

from __future__ import annotations

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["make_xor", "xor_pair_dependence"]


def make_xor(
    n: int, bits: int = 8, *, noise: float = 0.0, p_xor: float = 1.0, seed: int | None = 0
) -> dict[str, np.ndarray]:
    """Draw ``n`` triples ``(a, b, c)`` of ``bits``-bit binary vectors with ``c = a XOR b``.

    Parameters
    ----------
    n
        Number of items.
    bits
        Length of each binary vector.
    noise
        Probability of flipping each bit of ``c`` (0: exact XOR).
    p_xor
        Probability that an item's ``c`` is the XOR; otherwise ``c = a`` (the paper's ``i``).
    seed
        Seed of the generator.

    Returns
    -------
    dict
        ``{"a", "b", "c"}``: ``(n, bits)`` float32 arrays of 0/1, plus ``"is_xor"`` (``(n,)``
        bool, which items follow the XOR).
    """
    if n < 1 or bits < 1:
        raise ConfigError(f"make_xor: n={n} and bits={bits} must be >= 1")
    if not 0.0 <= noise <= 0.5:
        raise ConfigError(f"make_xor: noise={noise} must be in [0, 0.5]")
    if not 0.0 <= p_xor <= 1.0:
        raise ConfigError(f"make_xor: p_xor={p_xor} must be in [0, 1]")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, size=(n, bits), dtype=np.int8)
    b = rng.integers(0, 2, size=(n, bits), dtype=np.int8)
    is_xor = rng.random(n) < p_xor
    c = np.where(is_xor[:, None], a ^ b, a)
    if noise > 0:
        c = c ^ (rng.random((n, bits)) < noise).astype(np.int8)
    return {
        "a": a.astype(np.float32),
        "b": b.astype(np.float32),
        "c": c.astype(np.float32),
        "is_xor": is_xor,
    }


def xor_pair_dependence(data: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute bit-wise correlation of every pair (near 0 for pure XOR data).

    A sanity check of the generator: with ``p_xor = 1`` every pair of modalities is
    independent, so every bit-to-bit correlation is sampling noise (about ``1 / sqrt(n)``).
    """
    out = {}
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
        u, v = data[x] - data[x].mean(0), data[y] - data[y].mean(0)
        denom = np.sqrt((u**2).sum(0)[:, None] * (v**2).sum(0)[None, :])
        corr = (u.T @ v) / np.where(denom > 0, denom, 1.0)
        out[f"{x}-{y}"] = float(np.abs(corr).max())
    return out
