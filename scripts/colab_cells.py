#!/usr/bin/env python
"""Write (or check) every chapter's Google Colab install cell from the book's configuration.

The repository's address is written once, as ``repository.url`` in ``_config.yml`` (which also
gives the book's launch and repository buttons, and the docs' ``{{ repository_url }}``). A notebook
opened on Colab is not inside a clone, so it cannot read that file: this script writes the address
into each chapter's install cell (the code cell that tests ``"google.colab" in sys.modules``), in
both twins (``notebooks/NN_*.md`` and ``.ipynb``). ``tests/test_colab_cells.py`` fails when a cell
differs from what this script writes, so after changing the address run::

    python scripts/colab_cells.py --write

The cell clones the repository (the chapters read its published results), installs lungseg from
the clone with only what Colab lacks (Colab's torch, torchvision, numpy, pandas, matplotlib and
seaborn already satisfy its requirements), adds ``pydensecrf2`` only in the chapters that run the
CRF (:data:`CRF_CHAPTERS`), and changes into the clone's ``notebooks/`` folder. Elsewhere it does
nothing.

Usage:
    python scripts/colab_cells.py [--write | --check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_config.yml"
NOTEBOOKS = ROOT / "notebooks"
#: Chapters that run the dense CRF (eq. 10): the grid's CRF evaluations, Figure 2, the CRF chapter.
CRF_CHAPTERS = frozenset({"04", "06", "08"})
#: What marks a chapter's install cell.
MARKER = '"google.colab" in sys.modules'
CLONE = "/content/lungseg"


def repository_url(config: Path = CONFIG) -> str:
    """``repository.url`` of the book's ``_config.yml``.

    Raises:
        ValueError: the file has no ``repository:`` mapping with a ``url``.
    """
    import yaml

    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    url = (data.get("repository") or {}).get("url")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(f"{config}: repository.url must be an https:// address, got {url!r}")
    return url


def colab_cell(url: str, crf: bool) -> str:
    """The install cell's source for a chapter (``crf``: also install pydensecrf2)."""
    packages = f'"{CLONE}"' + (', "pydensecrf2"' if crf else "")
    return "\n".join([
        "# On Google Colab only: clone the book's repository (its published results), install lungseg and",
        "# what Colab lacks" + (" (with pydensecrf2 for the CRF)" if crf else "") + ", and work in the clone."
        " Nothing happens elsewhere.",
        "# Written from _config.yml (repository.url) by scripts/colab_cells.py.",
        "import os",
        "import subprocess",
        "import sys",
        "",
        f"if {MARKER}:",
        f'    if not os.path.isdir("{CLONE}"):',
        f'        subprocess.run(["git", "clone", "--depth", "1", "{url}", "{CLONE}"], check=True)',
        f'    subprocess.run([sys.executable, "-m", "pip", "install", "-q", {packages}], check=True)',
        f'    os.chdir("{CLONE}/notebooks")',
    ])


def chapters() -> list[Path]:
    """The chapters' MyST sources, ``notebooks/NN_*.md``."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md"))


_MD_CELL = re.compile(r"(```\{code-cell\}[^\n]*\n(?::[^\n]*\n)*\n?)(?P<body>.*?)\n```", re.DOTALL)


def _md_with_cell(text: str, cell: str, where: Path) -> str:
    hits = [m for m in _MD_CELL.finditer(text) if MARKER in m.group("body")]
    if len(hits) != 1:
        raise ValueError(f"{where}: expected one Colab install cell (a code cell testing {MARKER}), found {len(hits)}")
    m = hits[0]
    return text[: m.start("body")] + cell + text[m.end("body") :]


def md_cell(path: Path) -> str:
    """The install cell's source in a chapter's ``.md``."""
    text = path.read_text(encoding="utf-8")
    hits = [m.group("body") for m in _MD_CELL.finditer(text) if MARKER in m.group("body")]
    if len(hits) != 1:
        raise ValueError(f"{path}: expected one Colab install cell, found {len(hits)}")
    return hits[0]


def ipynb_cells(path: Path) -> list[str]:
    """The sources of the code cells of a ``.ipynb`` that test for Colab."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and MARKER in c.source]


def expected_cell(md: Path, url: str) -> str:
    """What :func:`colab_cell` writes for the chapter ``md``."""
    return colab_cell(url, crf=md.name[:2] in CRF_CHAPTERS)


def write(url: str) -> list[Path]:
    """Rewrite every chapter's install cell in both twins; returns the files changed."""
    import nbformat

    changed = []
    for md in chapters():
        cell = expected_cell(md, url)
        text = md.read_text(encoding="utf-8")
        new = _md_with_cell(text, cell, md)
        if new != text:
            md.write_text(new, encoding="utf-8")
            changed.append(md)
        ipynb = md.with_suffix(".ipynb")
        if ipynb.is_file():
            nb = nbformat.read(ipynb, as_version=4)
            cells = [c for c in nb.cells if c.cell_type == "code" and MARKER in c.source]
            if len(cells) != 1:
                raise ValueError(f"{ipynb}: expected one Colab install cell, found {len(cells)}")
            if cells[0].source != cell:
                cells[0].source = cell
                nbformat.write(nb, ipynb)
                changed.append(ipynb)
    return changed


def check(url: str) -> list[str]:
    """Differences between the chapters' install cells and what :func:`write` would write."""
    problems = []
    for md in chapters():
        cell = expected_cell(md, url)
        try:
            if md_cell(md) != cell:
                problems.append(f"{md.relative_to(ROOT)}: the Colab install cell differs from _config.yml's")
        except ValueError as exc:
            problems.append(str(exc))
        ipynb = md.with_suffix(".ipynb")
        if ipynb.is_file() and ipynb_cells(ipynb) != [cell]:
            problems.append(f"{ipynb.relative_to(ROOT)}: the Colab install cell differs from _config.yml's")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the cells (default: check only)")
    group.add_argument("--check", action="store_true", help="exit 1 when a cell differs (the default)")
    args = ap.parse_args(argv)
    url = repository_url()
    if args.write:
        for path in write(url):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    problems = check(url)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"colab_cells: {len(chapters())} chapters, repository {url}: {len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
