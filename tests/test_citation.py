"""LICENSE and CITATION.cff: the code's licence, and how to cite the paper and this companion.

The structure is checked here with YAML alone (cffconvert, which validates against the CFF 1.2.0
schema, is not a dependency: ``pip install cffconvert && cffconvert --validate`` passed when the file
was written, and the last test repeats it where cffconvert is installed).
"""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAPER_TITLE = "Attention-Enhanced Residual U-Net with Hybrid Loss for Robust Lung Cancer Segmentation"


def _cff() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def _check_person(person: dict) -> None:
    assert isinstance(person, dict) and (person.get("family-names") or person.get("name")), person
    assert set(person) <= {"family-names", "given-names", "name-particle", "name-suffix", "affiliation", "email",
                           "orcid", "name", "website", "alias"}, person


def test_the_citation_file_has_the_cff_required_fields() -> None:
    cff = _cff()
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff.get(key), f"CITATION.cff: {key} is required"
    assert cff.get("type", "software") == "software"
    for person in cff["authors"]:
        _check_person(person)
    assert cff["license"] == "MIT" and (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert cff["repository-code"].startswith("https://")


def test_the_preferred_citation_is_the_paper() -> None:
    paper = _cff()["preferred-citation"]
    assert paper["type"] == "article" and paper["title"] == PAPER_TITLE
    assert [a["family-names"] for a in paper["authors"]] == ["Shrivastav", "Pandey"]
    for person in paper["authors"]:
        _check_person(person)
    assert paper["year"] == 2025
    datetime.date.fromisoformat(str(paper["date-published"]))


def test_the_data_licences_are_listed() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for licence in ("CC BY-SA 4.0", "CC BY 3.0", "CC BY-NC 3.0"):
        assert licence in readme and licence in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_cffconvert_validates_it_where_installed() -> None:
    pytest.importorskip("cffconvert", reason="cffconvert is not installed (not a dependency)")
    done = subprocess.run(["cffconvert", "--validate", "-i", str(ROOT / "CITATION.cff")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
