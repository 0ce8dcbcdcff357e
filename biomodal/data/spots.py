"""Paired (histology tile, spot expression) dataset for spatial transcriptomics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from biomodal.data.transforms import ToTensor, Transform
from biomodal.errors import ConfigError, DataError, ReaderError
from biomodal.modalities import BATCH_CODE, SUBJECT

__all__ = ["SpotTileDataset"]

_RESERVED = {"histology", "expression", BATCH_CODE, SUBJECT, "index"}
_CACHES = (None, "memory", "preload")


def _load_inputs(data: Any, root: Path | None) -> list[tuple[Any, Path | None]]:
    """Normalise the input into ``(adata, folder to resolve relative slide paths against)``."""
    import anndata as ad

    if hasattr(data, "adatas") and hasattr(data, "sections"):  # DemoDataset
        return [(a, None) for a in data.adatas()]
    items = [data] if isinstance(data, (ad.AnnData, str, os.PathLike)) else list(data)
    out = []
    for item in items:
        if isinstance(item, ad.AnnData):
            out.append((item, root))
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise ReaderError(path, "no such .h5ad file")
            out.append((ad.read_h5ad(path), root or path.resolve().parent))
        else:
            raise DataError(
                f"SpotTileDataset got {type(item).__name__}; expected AnnData, an .h5ad path or DemoDataset"
            )
    if not out:
        raise DataError("SpotTileDataset got no sections")
    return out


def _slide_info(adata: Any, folder: Path | None, i: int) -> tuple[Path, float | None]:
    spatial = adata.uns.get("spatial")
    name = f"section {i} ({adata.obs['sample'].iloc[0] if 'sample' in adata.obs and adata.n_obs else i})"
    if not isinstance(spatial, dict) or "slide_path" not in spatial:
        raise DataError(
            f"{name}: uns['spatial']['slide_path'] is missing; expected the path of the section's slide"
        )
    if "spatial" not in adata.obsm:
        raise DataError(f"{name}: obsm['spatial'] (spot x, y in level-0 slide pixels) is missing")
    path = Path(str(spatial["slide_path"]))
    if not path.is_absolute():
        path = (folder or Path.cwd()) / path
    if not path.exists():
        raise ReaderError(
            path, f"slide of {name} not found (uns['spatial']['slide_path']={spatial['slide_path']!r})"
        )
    mpp = spatial.get("mpp")
    return path.resolve(), None if mpp is None else float(mpp)


def _codes(values: Any) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    values = pd.Series(values)
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in values.cat.categories]
    else:
        cats = sorted({str(v) for v in values.dropna()})
    lookup = {c: i for i, c in enumerate(cats)}
    codes = np.array([-1 if pd.isna(v) else lookup[str(v)] for v in values], dtype=np.int64)
    return codes, cats


class SpotTileDataset(Dataset):
    """For every spot: the H&E tile centred on it and its expression vector.

    Parameters
    ----------
    data
        AnnData sections following the spatial convention (``obsm["spatial"]`` in level-0
        pixels, ``uns["spatial"]`` with ``slide_path`` and ``mpp``), ``.h5ad`` paths, or a
        :class:`~biomodal.datasets.synthetic.DemoDataset` (all its sections).
    tile_um
        Physical side of the tile in microns.
    mpp
        Microns per pixel of the returned tile; ``tile_px = round(tile_um / mpp)``.
    tile_px
        Output side in pixels; when given it wins: the tile still covers ``tile_um`` and is
        read at ``tile_um / tile_px`` microns per pixel.
    genes
        A fitted :class:`~biomodal.pp.GenePipeline` (its output is precomputed once); ``None``
        uses ``X`` as stored (all sections must share ``var_names``).
    transform
        Applied to the ``uint8`` (H, W, 3) tile; a :class:`~biomodal.data.transforms.Transform`
        gets a generator seeded by ``(seed, epoch, index)``.  Default: :class:`ToTensor`.
    obs_keys
        Columns returned as ``int64`` codes under their own names (categories in
        :attr:`label_categories`).  ``None``: ``"tissue_type"`` when present.
    batch_key, subject_key
        ``obs`` columns giving the items' ``"batch_code"`` and ``"subject"`` integer codes
        (:data:`~biomodal.modalities.BATCH_CODE`, :data:`~biomodal.modalities.SUBJECT`; the
        subject falls back to ``sample``, then to the section number).
    cache
        ``None``; ``"memory"`` (decode each tile once per process); ``"preload"`` (decode all
        tiles now into one array shared by forked workers).
    root
        Folder that relative ``slide_path`` values of in-memory AnnData are relative to
        (``.h5ad`` paths resolve against their own folder).
    seed
        Seed of the augmentation generators.
    """

    def __init__(
        self,
        data: Any,
        *,
        tile_um: float = 112.0,
        mpp: float = 1.0,
        tile_px: int | None = None,
        genes: Any = None,
        transform: Any = None,
        obs_keys: Sequence[str] | None = None,
        batch_key: str = "batch",
        subject_key: str = "donor",
        cache: str | None = None,
        root: str | os.PathLike | None = None,
        seed: int = 0,
    ) -> None:
        import pandas as pd

        if not tile_um > 0:
            raise ConfigError(f"SpotTileDataset tile_um={tile_um}; expected > 0")
        if tile_px is None:
            if not mpp or mpp <= 0:
                raise ConfigError(f"SpotTileDataset mpp={mpp}; expected > 0")
            tile_px = round(tile_um / mpp)
        else:
            mpp = tile_um / int(tile_px)
        if int(tile_px) < 1:
            raise ConfigError(f"SpotTileDataset tile_px={tile_px}; expected >= 1")
        if cache not in _CACHES:
            raise ConfigError(f"SpotTileDataset cache={cache!r}; expected one of {_CACHES}")
        self.tile_um, self.mpp, self.tile_px = float(tile_um), float(mpp), int(tile_px)
        self.transform = transform if transform is not None else ToTensor()
        self.batch_key, self.subject_key, self.cache, self.seed = batch_key, subject_key, cache, int(seed)
        self.epoch = 0

        inputs = _load_inputs(data, None if root is None else Path(root))
        self._slide_paths, self._slide_mpps, obs_parts, xy, section = [], [], [], [], []
        for i, (adata, folder) in enumerate(inputs):
            path, smpp = _slide_info(adata, folder, i)
            self._slide_paths.append(path)
            self._slide_mpps.append(smpp)
            coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
            if coords.ndim != 2 or coords.shape != (adata.n_obs, 2):
                raise DataError(
                    f"section {i}: obsm['spatial'] has shape {coords.shape}; expected ({adata.n_obs}, 2)"
                )
            xy.append(coords)
            section.append(np.full(adata.n_obs, i, dtype=np.int64))
            part = adata.obs.copy()
            if "sample" not in part:
                part["sample"] = path.stem
            obs_parts.append(part)
        self._xy, self._section = np.concatenate(xy), np.concatenate(section)
        obs = pd.concat(obs_parts, axis=0)
        if not obs.index.is_unique:
            obs.index = [f"{s}_{n}" for s, n in zip(obs["sample"].astype(str), obs.index)]
        self.obs = obs
        if batch_key not in obs:
            raise DataError(f"obs has no column {batch_key!r} (batch_key); columns: {list(obs.columns)}")
        self._batch, self.batch_categories = _codes(obs[batch_key])
        subj = subject_key if subject_key in obs else "sample"
        self._subject, self.subject_categories = _codes(obs[subj])

        if obs_keys is None:
            obs_keys = [k for k in ("tissue_type",) if k in obs]
        self.obs_keys = list(obs_keys)
        self._labels, self.label_categories = {}, {}
        for key in self.obs_keys:
            if key in _RESERVED:
                raise ConfigError(
                    f"obs_keys entry {key!r} clashes with a batch key; reserved: {sorted(_RESERVED)}"
                )
            if key not in obs:
                raise DataError(f"obs has no column {key!r} (obs_keys); columns: {list(obs.columns)}")
            self._labels[key], self.label_categories[key] = _codes(obs[key])

        self.genes = genes
        self.expression, self.gene_names = self._expression([a for a, _ in inputs], genes)
        self._slides: dict[int, Any] = {}
        self._memory: dict[int, np.ndarray] = {}
        self._tiles: np.ndarray | None = None
        if cache == "preload":
            self._tiles = np.stack([self._read_tile(i) for i in range(len(self))])

    @staticmethod
    def _expression(adatas: list[Any], genes: Any) -> tuple[np.ndarray, list[str]]:
        from scipy import sparse

        if genes is not None:
            if not getattr(genes, "is_fitted", True):
                raise ConfigError(
                    "SpotTileDataset genes: the GenePipeline is not fitted; call genes.fit(train_sections)"
                )
            mats = [np.asarray(genes.transform(a), dtype=np.float32) for a in adatas]
            return np.concatenate(mats), list(genes.var_names_)
        names = list(adatas[0].var_names)
        for i, a in enumerate(adatas[1:], start=1):
            if list(a.var_names) != names:
                raise DataError(
                    f"section {i} has different var_names than section 0; "
                    "pass a fitted GenePipeline (genes=...)"
                )
        mats = [a.X.toarray() if sparse.issparse(a.X) else np.asarray(a.X) for a in adatas]
        return np.concatenate(mats).astype(np.float32), names

    # ------------------------------------------------------------------ slides and tiles
    def _slide(self, s: int) -> Any:
        slide = self._slides.get(s)
        if slide is None:
            from biomodal.io import read_slide

            slide = read_slide(self._slide_paths[s], mpp=self._slide_mpps[s])
            self._slides[s] = slide
        return slide

    def _read_tile(self, i: int) -> np.ndarray:
        slide = self._slide(int(self._section[i]))
        side0 = self.tile_um / slide.mpp  # level-0 pixels covered by the tile
        x, y = self._xy[i]
        loc = (round(x - side0 / 2), round(y - side0 / 2))
        return slide.read_region(loc, (self.tile_px, self.tile_px), mpp=self.mpp)

    def tile(self, index: int) -> np.ndarray:
        """Return the raw ``(tile_px, tile_px, 3)`` uint8 tile of spot ``index`` (cached per ``cache``)."""
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} spots")
        i %= len(self)
        if self._tiles is not None:
            return self._tiles[i]
        if self.cache == "memory":
            if i not in self._memory:
                self._memory[i] = self._read_tile(i)
            return self._memory[i]
        return self._read_tile(i)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (call once per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._xy)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.item(index)

    def item(self, index: int, *, skip: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """Item ``index``, without the modalities in ``skip`` (their inputs are not even read).

        The feature cache (:mod:`biomodal.train.feature_cache`) skips ``"histology"`` when a
        frozen encoder's features of the tiles are cached: no tile is decoded.
        """
        i = int(index) % len(self)
        item: dict[str, torch.Tensor] = {}
        if "histology" not in skip:
            img = self.tile(i)
            if isinstance(self.transform, Transform):
                img = self.transform(img, rng=np.random.default_rng([self.seed, self.epoch, i]))
            else:
                img = self.transform(img)
            if not isinstance(img, torch.Tensor):
                img = ToTensor()(img)
            if img.ndim != 3 or img.shape[0] != 3:
                raise DataError(f"transform returned shape {tuple(img.shape)}; expected (3, H, W)")
            item["histology"] = img.float()
        if "expression" not in skip:
            item["expression"] = torch.from_numpy(self.expression[i])
        item.update(
            {
                BATCH_CODE: torch.tensor(self._batch[i], dtype=torch.int64),
                SUBJECT: torch.tensor(self._subject[i], dtype=torch.int64),
                "index": torch.tensor(i, dtype=torch.int64),
            }
        )
        for key, codes in self._labels.items():
            item[key] = torch.tensor(codes[i], dtype=torch.int64)
        return item

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_slides"], state["_memory"] = {}, {}  # reopened lazily in each worker
        return state

    def feature_cache_key(self, modality: str) -> dict[str, Any] | None:
        """Describe what determines the ``modality`` input of every item (``None``: it is random).

        For ``"histology"``: each slide's path, size and modification time, the spot centres and
        sections, the tile geometry and the (non-random) transform. For ``"expression"``: a hash
        of the precomputed matrix. A change to any of them changes the feature-cache key.
        """
        import hashlib

        if modality == "histology":
            if getattr(self.transform, "random", True):
                return None
            slides = []
            for p, m in zip(self._slide_paths, self._slide_mpps):
                st = Path(p).stat()
                slides.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns, m])
            coords = hashlib.sha1(self._xy.tobytes() + self._section.tobytes()).hexdigest()
            return {
                "slides": slides,
                "coords_sha1": coords,
                "tile_um": self.tile_um,
                "mpp": self.mpp,
                "tile_px": self.tile_px,
                "transform": repr(self.transform),
            }
        if modality == "expression":
            digest = hashlib.sha1(np.ascontiguousarray(self.expression).tobytes()).hexdigest()
            return {"expression_sha1": digest}
        return None

    # ------------------------------------------------------------------ description
    @property
    def spatial(self) -> np.ndarray:
        """(n, 2) spot centres in level-0 pixels of their own slide (aligned with indices)."""
        return self._xy

    @property
    def batch_codes(self) -> np.ndarray:
        """``int64`` batch code of every spot (aligned with indices)."""
        return self._batch

    @property
    def spec(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild the same inputs."""
        norm = (
            self.genes.state_dict() if self.genes is not None and hasattr(self.genes, "state_dict") else None
        )
        return {
            "tile_um": self.tile_um,
            "mpp": self.mpp,
            "tile_px": self.tile_px,
            "genes": list(self.gene_names),
            "normalisation": norm if norm is not None else "none (adata.X as stored)",
            "batch_key": self.batch_key,
            "subject_key": self.subject_key,
            "batch_categories": list(self.batch_categories),
            "obs_keys": list(self.obs_keys),
            "n_spots": len(self),
        }

    def __repr__(self) -> str:
        return (
            f"SpotTileDataset(spots={len(self)}, sections={len(self._slide_paths)}, "
            f"tile={self.tile_um:g} um @ {self.mpp:.4g} um/px = {self.tile_px} px, "
            f"genes={len(self.gene_names)}, batches={len(self.batch_categories)} ({self.batch_key}), "
            f"subjects={len(self.subject_categories)}, "
            f"cache={self.cache})"
        )
