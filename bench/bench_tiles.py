"""Tile extraction throughput and memory of biomodal's slide reader and TileDataset.

1. tiles/s extracting 224-px tiles at 0.5 um/px from the real CMU-1 SVS with
   ``TileDataset`` (single process, and a DataLoader with 2 workers) next to a raw
   ``openslide.read_region`` loop over the same coordinates (goals: >= 0.9x and >= 1.7x).
2. resident memory (RSS) at start / middle / end while iterating every tile of a large
   generated pyramidal TIFF (must stay flat: pyramids are never loaded whole).

Prints one JSON object per line. ``--quick`` runs a small smoke version.

    python bench/bench_tiles.py [--quick] [--slide PATH] [--big-size 32768]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def best_rate(fn, n_tiles: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_tiles / best


def bench_throughput(slide_path: Path, quick: bool, workers: int) -> None:
    import openslide
    import torch

    from biomodal.data import TileDataset
    from biomodal.io import read_slide
    from biomodal.pp import tile

    slide = read_slide(slide_path)
    coords = tile(slide, tile_px=224, mpp=0.5, stride_px=112, min_tissue_fraction=0)
    if quick:
        coords = coords.iloc[:120]
    xs, ys = coords.x.to_numpy(), coords.y.to_numpy()
    n = len(coords)
    repeats = 2 if quick else 5
    osr = openslide.OpenSlide(str(slide_path))

    def raw() -> None:
        for x, y in zip(xs, ys):
            np.asarray(osr.read_region((int(x), int(y)), 0, (224, 224)).convert("RGB"))

    ds = TileDataset(slide, coords, tile_px=224, mpp=0.5)

    def ours() -> None:
        for i in range(n):
            ds[i]

    raw(), ours()  # warm OpenSlide's tile caches for both
    rates = {"raw": [], "ours": []}
    for _ in range(repeats):  # interleave so machine noise hits both
        rates["raw"].append(best_rate(raw, n, 1))
        rates["ours"].append(best_rate(ours, n, 1))
    raw_rate, our_rate = max(rates["raw"]), max(rates["ours"])
    common = {"bench": "tiles", "slide": slide_path.name, "tile_px": 224, "mpp": 0.5, "n_tiles": n}
    emit(**common, case="raw_openslide_read_region", tiles_per_s=round(raw_rate, 1))
    emit(
        **common,
        case="TileDataset_1proc",
        tiles_per_s=round(our_rate, 1),
        ratio_vs_raw=round(our_rate / raw_rate, 3),
        goal=0.9,
    )

    loader = torch.utils.data.DataLoader(
        ds, batch_size=32, num_workers=workers, persistent_workers=True, multiprocessing_context="fork"
    )
    for _ in loader:  # start workers, warm their handles
        pass
    dl_rate = best_rate(lambda: [None for _ in loader], n, repeats)
    emit(
        **common,
        case=f"DataLoader_{workers}workers",
        tiles_per_s=round(dl_rate, 1),
        ratio_vs_raw=round(dl_rate / raw_rate, 3),
        goal=1.7,
        cpu_count=os.cpu_count(),
    )


def he_like_tile(side: int, seed: int) -> np.ndarray:
    """A ``side`` x ``side`` RGB tile: pink/purple discs on a near-white background, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    img = np.full((side, side, 3), 245, dtype=np.float32)
    for _ in range(4):
        cx, cy = rng.uniform(0.2, 0.8, size=2) * side
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (rng.uniform(0.08, 0.2) * side) ** 2
        img[inside] = (200, 110, 170)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_big_slide(path: Path, size: int, mpp: float = 0.25) -> float:
    from biomodal.datasets import write_pyramid_tiff

    pool = [he_like_tile(256, seed=s) for s in range(8)]
    blank = np.full((256, 256, 3), 240, np.uint8)

    def tile_fn(level: int, x: int, y: int, t: int) -> np.ndarray:
        k = (x // t * 7 + y // t * 13 + level) % 11
        return pool[k] if k < 8 else blank

    t0 = time.perf_counter()
    n_levels = max(1, int(np.log2(size / 512)) + 1)
    write_pyramid_tiff(path, size=(size, size), tile_fn=tile_fn, mpp=mpp, n_levels=n_levels, quality=80)
    return time.perf_counter() - t0


def bench_memory(size: int, quick: bool) -> None:
    from biomodal.data import TileDataset
    from biomodal.io import read_slide
    from biomodal.pp import tile

    tmp = Path(tempfile.mkdtemp(prefix="bench_tiles_"))
    try:
        path = tmp / "big.tiff"
        gen_s = make_big_slide(path, size)
        slide = read_slide(path)
        emit(
            bench="tiles_memory",
            case="generated_slide",
            size=f"{size}x{size}",
            levels=slide.level_count,
            mpp=slide.mpp,
            file_mb=round(path.stat().st_size / 2**20, 1),
            write_s=round(gen_s, 1),
            decoded_level0_gb=round(size * size * 3 / 2**30, 2),
        )
        coords = tile(slide, tile_px=224, mpp=0.5, min_tissue_fraction=0)
        if quick:
            coords = coords.iloc[: min(len(coords), 2000)]
        ds = TileDataset(slide, coords, tile_px=224, mpp=0.5)
        n = len(ds)
        marks = {0: "start", n // 2: "middle", n - 1: "end"}
        t0 = time.perf_counter()
        start_rss = None
        for i in range(n):
            ds[i]
            if i in marks:
                r = rss_mb()
                start_rss = r if start_rss is None else start_rss
                emit(
                    bench="tiles_memory",
                    phase=marks[i],
                    tile=i,
                    n_tiles=n,
                    rss_mb=round(r, 1),
                    growth_mb=round(r - start_rss, 1),
                )
        emit(
            bench="tiles_memory",
            case="iterate_all",
            n_tiles=n,
            tiles_per_s=round(n / (time.perf_counter() - t0), 1),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument(
        "--slide", type=Path, default=ROOT.parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
    )
    ap.add_argument("--big-size", type=int, default=None, help="side of the generated slide (default 32768)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.slide.exists():
        bench_throughput(args.slide, args.quick, args.workers)
    else:
        emit(bench="tiles", skipped=f"{args.slide} not found")
    bench_memory(args.big_size or (4096 if args.quick else 32768), args.quick)


if __name__ == "__main__":
    main()
