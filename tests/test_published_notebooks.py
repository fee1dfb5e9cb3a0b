"""`make test` re-executes the published chapters and nbval compares every output: the Makefile's
wiring, the sanitiser file (notebooks/nbval_sanitize.cfg) masks what changes between runs and
nothing else, and without pydensecrf2 the CRF chapters are skipped with the reason
(notebooks/conftest.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SANITIZER = ROOT / "notebooks" / "nbval_sanitize.cfg"


def _recipe(target: str) -> str:
    """The recipe lines of ``target`` in the Makefile, joined (continuations included)."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert match, f"Makefile: no recipe for {target!r}"
    return match.group(1).replace("\\\n", " ")


def _sanitize(text: str) -> str:
    from nbval.plugin import get_sanitize_patterns

    for regex, replace in get_sanitize_patterns(SANITIZER.read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


def test_make_test_runs_strict_nbval_on_the_published_chapters_after_the_quick_batch() -> None:
    test = _recipe("test")
    assert test.index("--nbval-lax") < test.index("test-published"), "the quick batch stays first"
    published = _recipe("test-published")
    assert re.search(r"--nbval(?=\s)", published), "strict --nbval: every cell's outputs compared"
    assert "--nbval-lax" not in published
    assert "--nbval-sanitize-with $(NBVAL_SANITIZE)" in published
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^NBVAL_SANITIZE := notebooks/nbval_sanitize\.cfg$", makefile, re.MULTILINE)
    assert re.search(r"^PUBLISHED_NOTEBOOKS := .*notebooks/\[0-9\]\[0-9\]_\*\.ipynb", makefile, re.MULTILINE)


def test_the_sanitiser_has_one_section_per_kind_and_nbval_reads_every_rule() -> None:
    from nbval.plugin import get_sanitize_patterns

    text = SANITIZER.read_text(encoding="utf-8")
    assert re.findall(r"^\[(\w+)\]$", text, re.MULTILINE) == ["times", "dates", "versions", "paths"]
    # nbval reads a `regex:` line only when its `replace:` line follows at once: a stray one is ignored silently
    assert len(get_sanitize_patterns(text)) == len(re.findall(r"^regex: ", text, re.MULTILINE))
    assert len(get_sanitize_patterns(text)) == len(re.findall(r"^replace: ", text, re.MULTILINE))


def test_the_provenance_of_two_runs_sanitises_alike() -> None:
    from lungseg.provenance import collect, format_provenance

    here = collect(started=0.0)
    elsewhere = {**here, "git": {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": True},
                 "device": "cuda: NVIDIA H100", "python": "3.12.1", "packages": {"torch": "9.9.9"},
                 "time_utc": "2031-01-02T03:04:05+00:00", "wall_time_s": 1234.5}
    assert format_provenance(here) != format_provenance(elsewhere)
    assert _sanitize(format_provenance(here)) == _sanitize(format_provenance(elsewhere))


@pytest.mark.parametrize(("measured", "again"), [
    ("grid finished in 6 s in this session (0 trained now, 18 reused)",
     "grid finished in 20 s in this session (0 trained now, 18 reused)"),
    ("CRF on one 256x256 slice: 59 ms (5 mean-field iterations)",
     "CRF on one 256x256 slice: 116 ms (5 mean-field iterations)"),
])
def test_times_measured_in_the_session_are_masked(measured: str, again: str) -> None:
    assert _sanitize(measured) == _sanitize(again)


@pytest.mark.parametrize("published", [
    "device: cpu; total training wall time 4889 s over 18 runs",  # read from results/, not measured now
    "attention  pooled  0.823 [0.064, 1.000]  reproduced",
    "results -> results/medium/04_training",
    "test_patients: 5, date of the study: none",
])
def test_results_are_not_masked(published: str) -> None:
    assert _sanitize(published) == published


def test_a_masked_time_keeps_what_it_was_measured_on() -> None:
    assert _sanitize("CRF on one 128x256 slice: 59 ms") == "CRF on one 128x256 slice: <ms> ms"


def test_only_cells_reading_data_the_repository_lacks_escape_comparison() -> None:
    ignored = []
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md")):
        cells = source.read_text(encoding="utf-8").split("```{code-cell}")
        ignored += [(source.name, cell) for cell in cells if "nbval-ignore-output" in cell.split("\n", 2)[1]]
    assert [name for name, _ in ignored] == ["10_real_ct.md", "10_real_ct.md"]
    assert all("shared" in cell for _, cell in ignored)


def _conftest():
    spec = importlib.util.spec_from_file_location("notebooks_conftest", ROOT / "notebooks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Item(SimpleNamespace):
    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.append(marker)


def test_without_the_crf_its_chapters_are_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import lungseg.crf

    items = [_Item(path=ROOT / "notebooks" / f"{name}.ipynb", markers=[])
             for name in ("05_tables", "06_figures", "08_crf")]
    monkeypatch.setattr(lungseg.crf, "crf_available", lambda: False)
    _conftest().pytest_collection_modifyitems(None, items)
    skipped = {item.path.name: [m.mark.kwargs.get("reason") for m in item.markers] for item in items}
    assert skipped["05_tables.ipynb"] == []
    assert skipped["06_figures.ipynb"] == [f"06_figures.ipynb: {lungseg.crf.MISSING_CRF}"]
    assert skipped["08_crf.ipynb"] == [f"08_crf.ipynb: {lungseg.crf.MISSING_CRF}"]
    monkeypatch.setattr(lungseg.crf, "crf_available", lambda: True)
    for item in items:
        item.markers.clear()
    _conftest().pytest_collection_modifyitems(None, items)
    assert all(not item.markers for item in items)
