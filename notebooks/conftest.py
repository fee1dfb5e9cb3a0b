"""pytest's hooks for `make test`'s strict nbval pass over the published chapters (``notebooks/NN_*.ipynb``).

Their committed outputs were made with the dense CRF of eq. (10). Where pydensecrf2 is missing, the
chapters that run it (``scripts/run_notebooks.py``'s :func:`needs_crf`, the same rule that skips
executing them) are reported as skipped with the reason instead of failing in their CRF cells.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

_RUN_NOTEBOOKS = Path(__file__).resolve().parent.parent / "scripts" / "run_notebooks.py"


def _run_notebooks() -> ModuleType:
    # scripts/ is not a package: load the script by its path, as tests/test_run_notebooks.py does.
    spec = importlib.util.spec_from_file_location("run_notebooks", _RUN_NOTEBOOKS)
    assert spec is not None and spec.loader is not None, f"cannot load {_RUN_NOTEBOOKS}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every cell of a published chapter that needs the missing CRF as skipped, saying why."""
    from lungseg.crf import MISSING_CRF, crf_available

    if crf_available():
        return
    run_notebooks = _run_notebooks()
    for item in items:
        notebook = Path(str(item.path))
        if notebook.suffix == ".ipynb" and run_notebooks.needs_crf(notebook.with_suffix(".md"),
                                                                    run_notebooks.DEFAULT_PROFILE):
            item.add_marker(pytest.mark.skip(reason=f"{notebook.name}: {MISSING_CRF}"))
