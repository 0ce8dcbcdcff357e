"""Make the figures of docs/histology.md from the real sample files in ../shared/data.

    python bench/make_histology_figures.py [--data ../shared/data] [--out docs/img]

Writes ``cmu1_tissue_tiles.png`` (CMU-1 small region: tissue mask and 224-px tiles at
0.5 um/px) and ``her2st_c2_spots.png`` (HER2ST section C2 with its selected ST spots).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def cmu_figure(data: Path, out: Path) -> dict:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from biomodal.io import read_slide
    from biomodal.pp import detect_tissue, tile

    slide = read_slide(data / "wsi" / "CMU-1-Small-Region.svs")
    mask = detect_tissue(slide, mpp=8.0)
    tiles = tile(slide, tile_px=224, mpp=0.5, min_tissue_fraction=0.5, mask=mask)
    thumb = slide.thumbnail(600)
    f = thumb.shape[1] / slide.dimensions[0]
    fig, axes = plt.subplots(1, 2, figsize=(8, 5.2), dpi=90)
    axes[0].imshow(thumb)
    axes[0].contour(
        mask.mask.astype(float),
        levels=[0.5],
        colors="lime",
        linewidths=1.2,
        extent=(0, thumb.shape[1], 0, thumb.shape[0]),  # imshow already flipped the y axis
    )
    axes[0].set_title(f"tissue mask (Otsu on saturation, {mask.mpp:.0f} um/px)", fontsize=9)
    axes[1].imshow(thumb)
    for x, y, w in zip(tiles.x, tiles.y, tiles.w0):
        axes[1].add_patch(Rectangle((x * f, y * f), w * f, w * f, fill=False, ec="yellow", lw=0.7))
    axes[1].set_title(f"{len(tiles)} tiles, 224 px at 0.5 um/px, >= 50% tissue", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("CMU-1-Small-Region.svs (Aperio, 0.499 um/px; OpenSlide test data)", fontsize=10)
    fig.tight_layout()
    path = out / "cmu1_tissue_tiles.png"
    fig.savefig(path)
    plt.close(fig)
    return {"figure": str(path), "n_tiles": len(tiles), "tissue_fraction": round(mask.tissue_fraction, 3)}


def her2st_figure(data: Path, out: Path) -> dict:
    import matplotlib.pyplot as plt

    from biomodal.io import read_slide

    folder = data / "spatial" / "her2st" / "C2"
    slide = read_slide(folder / "image.jpg")
    spots = pd.read_csv(folder / "spots.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    thumb = slide.thumbnail(700)
    f = thumb.shape[1] / slide.dimensions[0]
    fig, ax = plt.subplots(figsize=(5.6, 5.8), dpi=90)
    ax.imshow(thumb)
    # legacy ST spots: 100 um diameter; ~256 px per 200 um array step -> radius ~64 px
    ax.scatter(
        spots.pixel_x * f, spots.pixel_y * f, s=9, facecolors="none", edgecolors="cyan", linewidths=0.7
    )
    ax.set_axis_off()
    ax.set_title(f"HER2ST section C2: {len(spots)} selected ST spots over the H&E image", fontsize=9)
    fig.tight_layout()
    path = out / "her2st_c2_spots.png"
    fig.savefig(path)
    plt.close(fig)
    return {
        "figure": str(path),
        "n_spots": len(spots),
        "image": f"{slide.dimensions[0]}x{slide.dimensions[1]}",
    }


def _shrink(path: Path) -> None:
    """Quantise to a 256-colour palette so the PNG stays small enough to commit."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for info in (cmu_figure(args.data, args.out), her2st_figure(args.data, args.out)):
        _shrink(Path(info["figure"]))
        info["kb"] = round(Path(info["figure"]).stat().st_size / 1024, 1)
        print(json.dumps(info))


if __name__ == "__main__":
    main()
