"""Where the repository is: paths that the profiles, the scripts and the book's chapters write
from the repository root resolve here.

It sits at the bottom of the package (standard library only), so that any stage can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "resolve"]


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The repository root: the nearest folder at or above ``start`` (default: cwd) holding
    ``pyproject.toml`` and a ``lungseg`` package; the current directory when there is none
    (e.g. the package installed from a wheel on Colab)."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "lungseg").is_dir():
            return folder
    return here


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path`` if absolute, otherwise relative to :func:`repo_root` (notebooks run in
    ``notebooks/`` under papermill and nbval, but their paths are written from the root)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p
