"""Demo-data generators and preparers for public datasets."""

from biomodal._exports import lazy_exports

_MAP = {
    "DemoDataset": "_demo_io",
    "make_demo_spatial": "synthetic",
    "write_pyramid_tiff": "_demo_io",
    "prepare_ptbxl": "ptbxl",
    "prepare_mimic_iv_ecg": "mimic_iv_ecg",
    "read_mimic_iv_ecg_index": "mimic_iv_ecg",
    "prepare_mimic_cxr": "chest_xray",
    "prepare_chexpert": "chest_xray",
    "prepare_iu_xray": "chest_xray",
    "read_cxr_index": "chest_xray",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)
