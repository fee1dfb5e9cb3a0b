"""scripts/run_notebooks.py: which chapters need the dense CRF, and skipping them where it is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chapters_that_need_the_crf_by_profile() -> None:
    runner = _runner()
    chapters = runner.discover(None)
    assert len(chapters) == 10
    medium = [p.name[:2] for p in chapters if runner.needs_crf(p, "medium")]
    quick = [p.name[:2] for p in chapters if runner.needs_crf(p, "quick")]
    assert medium == ["06", "08"]  # the published grid already holds its CRF evaluations
    assert quick == ["04", "05", "06", "07", "08", "10"]  # a trained grid evaluates with the CRF


def test_the_colab_cells_install_the_crf_where_a_chapter_may_run_it() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import colab_cells
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    runner = _runner()
    assert runner.CRF_CHAPTERS | {"04"} == colab_cells.CRF_CHAPTERS
