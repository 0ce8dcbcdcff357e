"""Gene-expression model of the synthetic demo dataset.

Spot counts are negative-binomial (gamma-Poisson) with mean

``mu[s, g] = L[s] * exp(b[g] + lfc[donor, g]) * sum_k f[s, k] * exp(M[k, g] + B[k, g] * z[s]) / C``

where ``f`` are the tissue-type fractions under the spot, ``z`` the standardised
log local nuclei density (a continuous appearance variable visible in the image),
``L`` the library size (grows with the number of nuclei under the spot, times a
donor and a section factor), ``lfc`` donor-specific gene-wise log-fold shifts and
``C`` a constant that makes ``L`` the typical total count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GeneModel", "make_gene_model", "sample_counts"]

_MARKERS = {
    "tumour": ["EPCAM", "KRT8", "KRT18", "CEACAM5", "ERBB2", "MUC1", "TFF1", "AGR2", "CLDN4", "ESR1"],
    "stroma": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "FN1", "POSTN", "SPARC", "ACTA2", "FAP"],
    "immune": ["PTPRC", "CD3E", "CD2", "MS4A1", "CD19", "CD74", "HLA-DRA", "LYZ", "CD68", "CXCL13"],
    "fat": ["ADIPOQ", "PLIN1", "FABP4", "LEP", "LPL", "CIDEA", "CIDEC", "PLIN4", "GPD1", "CD36"],
    "epithelium": ["KRT5", "KRT14", "KRT17", "KRT19", "ELF3", "CDH1", "SFN", "KRT7", "LTF", "MUC5B"],
}
_DENSITY = ["MKI67", "TOP2A", "PCNA", "MCM2", "CCNB1", "CDK1", "H2AZ1", "TUBB", "HMGB2", "STMN1"]
_TUMOUR_DENSITY = ["VEGFA", "CA9", "SLC2A1", "LDHA", "PGK1", "NDRG1"]


@dataclass
class GeneModel:
    """Gene parameters shared by all donors.

    Attributes
    ----------
    names
        Gene symbols (unique).
    program
        Per gene: ``"marker"``, ``"density"``, ``"tumour_density"`` or ``"background"``.
    marker_of
        Per gene: the tissue type it marks, or ``""``.
    base
        (G,) log baseline abundance ``b``.
    type_effect
        (K, G) log-fold effect of each tissue type ``M``.
    density_effect
        (K, G) log-fold change per unit of standardised log nuclei density ``B``.
    """

    names: list[str]
    program: list[str]
    marker_of: list[str]
    base: np.ndarray
    type_effect: np.ndarray
    density_effect: np.ndarray


def make_gene_model(
    rng: np.random.Generator, n_genes: int, tissue_types: tuple[str, ...], *, n_markers: int = 8
) -> GeneModel:
    """Draw the gene panel: markers per type, density-responsive genes, background genes."""
    k = len(tissue_types)
    names: list[str] = []
    program: list[str] = []
    marker_of: list[str] = []
    for t in tissue_types:
        pool = _MARKERS.get(t, [])
        for i in range(n_markers):
            names.append(pool[i] if i < len(pool) else f"{t.upper()}_M{i + 1}")
            program.append("marker")
            marker_of.append(t)
    for group, label in ((_DENSITY, "density"), (_TUMOUR_DENSITY, "tumour_density")):
        for name in group:
            names.append(name)
            program.append(label)
            marker_of.append("")
    if n_genes < len(names):
        raise ValueError(f"n_genes={n_genes} is below the {len(names)} structured genes (markers + programs)")
    n_bg = n_genes - len(names)
    names += [f"GENE{i + 1:04d}" for i in range(n_bg)]
    program += ["background"] * n_bg
    marker_of += [""] * n_bg

    g = len(names)
    prog = np.array(program)
    base = rng.normal(-0.5, 1.0, g)
    base[prog != "background"] = rng.normal(0.3, 0.5, int((prog != "background").sum()))
    type_effect = rng.normal(0.0, 0.25, (k, g))
    for j, t in enumerate(marker_of):
        if t:
            type_effect[tissue_types.index(t), j] = rng.uniform(1.8, 3.2)
    density_effect = np.zeros((k, g))
    dens = prog == "density"
    density_effect[:, dens] = rng.uniform(0.7, 1.2, int(dens.sum()))
    tum = prog == "tumour_density"
    if "tumour" in tissue_types:
        density_effect[tissue_types.index("tumour"), tum] = rng.uniform(1.0, 1.5, int(tum.sum()))
        type_effect[tissue_types.index("tumour"), tum] += 0.8
    return GeneModel(names, program, marker_of, base, type_effect, density_effect)


def sample_counts(
    rng: np.random.Generator,
    model: GeneModel,
    fractions: np.ndarray,
    density_z: np.ndarray,
    library: np.ndarray,
    donor_lfc: np.ndarray,
    *,
    dispersion: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw negative-binomial counts for spots.

    Parameters
    ----------
    fractions
        (n, K) tissue-type fractions under each spot (rows sum to 1).
    density_z
        (n,) standardised log local nuclei density.
    library
        (n,) expected total counts of each spot.
    donor_lfc
        (G,) donor-specific log-fold shift of each gene.
    dispersion
        Negative-binomial shape ``theta`` (variance ``mu + mu^2 / theta``).

    Returns
    -------
    counts, mean
        (n, G) int32 counts and the float64 means they were drawn from.
    """
    per_type = np.exp(model.type_effect[None] + model.density_effect[None] * density_z[:, None, None])
    rate = np.einsum("nk,nkg->ng", fractions, per_type) * np.exp(model.base + donor_lfc)[None]
    scale = np.exp(model.base).sum() * np.exp(0.5 * 0.25**2)  # typical sum of rates over genes
    mean = library[:, None] * rate / scale
    lam = rng.gamma(dispersion, mean / dispersion)
    return rng.poisson(lam).astype(np.int32), mean
