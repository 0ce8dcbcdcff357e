"""Preprocessing on AnnData and arrays (scanpy style)."""

from biomodal._exports import lazy_exports

_MAP = {
    "detect_tissue": "tissue",
    "TissueMask": "tissue",
    "tile": "tiling",
    "GenePipeline": "genes",
    "intersect_panels": "genes",
    "hvg_union": "genes",
    "harmony": "batch",
    "combat": "batch",
    "center_scale": "batch",
    # clinical: ECG signals and tabular values
    "ECGPipeline": "ecg_pipeline",
    "resample_volume": "volume",
    "window_volume": "volume",
    "bandpass": "ecg",
    "notch": "ecg",
    "remove_baseline": "ecg",
    "resample": "ecg",
    "crop_or_pad": "ecg",
    "to_standard_leads": "ecg",
    "fill_nan": "ecg",
    "LabStandardizer": "labs",
    "VoxelZScore": "fmri",
    "average_repeats": "fmri",
    "detrend": "fmri",
    "mask_roi": "fmri",
    "roi_columns": "fmri",
    "standardize_maps": "fmri",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)
