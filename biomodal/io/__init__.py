"""Readers: files -> numpy arrays / AnnData plus metadata (no torch).

:func:`read` picks a reader by suffix or content (see :mod:`biomodal.io.registry`);
the format-specific functions (:func:`read_slide`, :func:`read_visium`, ...) stay
available directly.
"""

from biomodal._exports import lazy_exports

_MAP = {
    "read_slide": "slide",
    "Slide": "slide",
    "read_visium": "spatial",
    "read_xenium": "spatial",
    "read_legacy_st": "spatial",
    "read_h5ad": "spatial",
    "estimate_mpp_from_spots": "spatial",
    # clinical: ECG, reports, labs, PTB-XL
    "ECG": "_ecg",
    "STANDARD_LEADS": "_ecg",
    "ecg_from_array": "_ecg",
    "normalize_lead_name": "_ecg",
    "read_ecg_npz": "_ecg",
    "read_wfdb": "_wfdb",
    "XRay": "_xray",
    "read_xray": "_xray",
    "Volume": "_volume",
    "read_volume": "_volume",
    "read_ecg_dicom": "_ecg_dicom",
    "Report": "_reports",
    "DEID_TOKEN": "_reports",
    "SECTION_ALIASES": "_reports",
    "split_sections": "_reports",
    "normalize_report": "_reports",
    "read_report_text": "_reports",
    "default_text_model_path": "_reports",
    "load_tokenizer": "_reports",
    "tokenize_reports": "_reports",
    "read_openi_xml": "_openi",
    "LabTable": "_labs",
    "read_labs": "_labs",
    "labs_from_frame": "_labs",
    "SUPERCLASSES": "_ptbxl",
    "read_ptbxl_index": "_ptbxl",
    "read_scp_statements": "_ptbxl",
    "scp_statement_text": "_ptbxl",
    "superclass_targets": "_ptbxl",
    "ptbxl_labs": "_ptbxl",
    "read_fmri": "_fmri",
    "FMRIImage": "_fmri",
    "read": "registry",
    "find_reader": "registry",
    "get_reader": "registry",
    "list_readers": "registry",
    "reader_info": "registry",
    "register_reader": "registry",
    "unregister_reader": "registry",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)
