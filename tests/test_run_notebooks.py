"""scripts/run_notebooks.py: which chapters need the dense CRF, skipping them where it is missing, and executed
notebooks that a rebuild writes the same."""

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


def test_cleaning_gives_every_cell_the_same_id_on_every_build(tmp_path: Path) -> None:
    """jupytext draws random cell ids; the executed notebook keeps ids fixed by position, so that ``make book``
    on unchanged results leaves the committed notebooks as they are."""
    import jupytext
    import nbformat

    source = tmp_path / "01_x.md"
    source.write_text("# A chapter\n\n```{code-cell} ipython3\nx = 1\n```\n\nText.\n")
    builds = []
    for name in ("a.ipynb", "b.ipynb"):
        jupytext.write(jupytext.read(source), tmp_path / name, fmt="ipynb")
        _runner()._clean(tmp_path / name)
        builds.append((tmp_path / name).read_text())
    assert builds[0] == builds[1]
    assert [cell.id for cell in nbformat.read(tmp_path / "a.ipynb", as_version=4).cells] == ["cell-0", "cell-1", "cell-2"]
