"""biomodal._suggest: the one did-you-mean helper, and the errors that use it."""

from __future__ import annotations

import pytest

from biomodal._registry import Registry
from biomodal._suggest import closest, did_you_mean, unknown_message
from biomodal.errors import ConfigError
from biomodal.modalities import check_modality


def test_did_you_mean():
    assert did_you_mean("histolgy", ["histology", "expression"]) == " Did you mean 'histology'?"
    assert did_you_mean("zzzz", ["histology", "expression"]) == ""
    assert did_you_mean("x", []) == ""
    assert did_you_mean("CLIP", ["clip", "siglip"]) == " Did you mean 'clip'?"  # case-insensitive fallback
    assert did_you_mean("siglp", ["siglip", "sigmoid"], n=2).startswith(" Did you mean 'siglip'")
    assert closest(3, [3, 4]) == ["3"]


def test_unknown_message():
    msg = unknown_message("loss", "clipp", ["siglip", "clip"])
    assert msg == "unknown loss 'clipp'; available: clip, siglip. Did you mean 'clip'?"
    assert unknown_message("reader", "x", []) == "unknown reader 'x'; available: none."
    assert "available: b, a." in unknown_message("thing", "q", ["b", "a"], sort=False)


def test_registry_and_modalities_use_it():
    reg: Registry[object] = Registry("loss")
    reg.register("clip")(dict)
    with pytest.raises(ConfigError, match=r"unknown loss 'clipp'; available: clip\. Did you mean 'clip'\?"):
        reg.create("clipp")
    with pytest.raises(ConfigError, match=r"unknown modality 'histolgy'.*Did you mean 'histology'\?"):
        check_modality("histolgy")
    assert check_modality("histology") == "histology"


# Modules that still build their own hint with difflib, to be switched to biomodal._suggest by
# their owner (reported to the lead; the test fails when an entry is no longer needed).
_OWN_DIFFLIB = {
    "biomodal/train/config.py": "train owner: TrainConfig.from_dict",
    "biomodal/nn/timm_encoders.py": "nn owner: unknown timm model name",
}


def test_one_did_you_mean_helper():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = set()
    for path in sorted((root / "biomodal").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if "difflib" in names and rel != "biomodal/_suggest.py":
                found.add(rel)
    assert not found - set(_OWN_DIFFLIB), f"use biomodal._suggest in {found - set(_OWN_DIFFLIB)}"
    assert not set(_OWN_DIFFLIB) - found, f"stale allow-list entries: {set(_OWN_DIFFLIB) - found}"
