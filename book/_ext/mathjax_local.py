"""Sphinx extension: serve MathJax from the built book, so the equations render offline.

MathJax 3.2.2 comes from the pinned Python package ``django-static-mathjax`` (the ``book`` extra),
whose ``mathjax/static/mathjax/es5`` folder is the MathJax distribution; it is copied to
``_build/html/_static/mathjax/`` when the HTML build finishes, and Sphinx's ``mathjax_path`` is set
to ``mathjax/tex-chtml.js`` (relative to ``_static``) before the first page is written. No page
loads anything from a CDN. ``scripts/check_book.py`` checks that every page's maths was typeset.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

#: Sphinx's ``mathjax_path``, relative to the book's ``_static`` folder.
MATHJAX_PATH = "mathjax/tex-chtml.js"
# SVG output and the "-full" bundles are not used by tex-chtml.js
_SKIP = shutil.ignore_patterns("*-full*.js", "*svg*", "*.map")


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax package.

    Raises:
        RuntimeError: the package is not installed (``pip install -e '.[book]'``).
    """
    try:
        import mathjax  # django-static-mathjax
    except ImportError as exc:
        raise RuntimeError("MathJax for the offline book is missing: pip install 'django-static-mathjax==3.2.2.1' "
                           "(part of lungseg's `book` extra)") from exc
    es5 = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError(f"{es5}/tex-chtml.js not found: the installed django-static-mathjax is not MathJax 3")
    return es5


def _use_local(app: Any, config: Any) -> None:
    config.mathjax_path = MATHJAX_PATH


def _copy(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(mathjax_source(), target, ignore=_SKIP)


def setup(app: Any) -> dict[str, Any]:
    mathjax_source()  # fail early, with the install command, when the package is missing
    app.connect("config-inited", _use_local)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
