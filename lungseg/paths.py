"""Where the repository is, and how a path is written into a file that may be published.

Paths that the profiles, the scripts and the book's chapters write from the repository root resolve
here (:func:`resolve`). A path recorded in a run's or an experiment's files (a run configuration's
``data``, an evaluation's ``run``, a grid's results table) is written by :func:`portable`: relative to the
repository, so that a published file names no folder of the machine that made it, and read back by
:func:`localize`, which accepts both that form and the absolute paths older files hold.

It sits at the bottom of the package (standard library only), so that any stage can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Folder", "find_repo_root", "localize", "portable", "repo_root", "resolve"]


def find_repo_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: cwd) holding ``pyproject.toml`` and a
    ``lungseg`` package, or ``None`` outside a clone of the repository."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "lungseg").is_dir():
            return folder
    return None


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The repository root: :func:`find_repo_root` of ``start`` (default: cwd); the current directory
    when there is none (e.g. the package installed from a wheel on Colab)."""
    return find_repo_root(start) or Path(start or os.getcwd()).resolve()


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path`` if absolute, otherwise relative to :func:`repo_root` (notebooks run in
    ``notebooks/`` under papermill and nbval, but their paths are written from the root)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def portable(path: str | os.PathLike[str]) -> str:
    """``path`` as a file records it: in POSIX form, relative to the repository that holds the
    current directory when the path lies in it or beside it (``../shared/realct``), so that
    published files name no folder of the machine that wrote them.

    Outside a clone of the repository (lungseg installed as a package, data elsewhere) the path is
    recorded absolute, as given: a relative path would then depend on the working directory, and
    such files stay on the user's machine.

    Args:
        path: a file or folder, absolute or relative to the current directory.

    Returns:
        The path to record; :func:`localize` turns it back into an absolute one.
    """
    p = Path(path).expanduser()
    absolute = p if p.is_absolute() else Path.cwd() / p
    absolute = Path(os.path.normpath(absolute))
    root = find_repo_root(absolute) or find_repo_root()
    if root is None:
        return str(absolute)
    try:
        return absolute.resolve().relative_to(root).as_posix() or "."
    except ValueError:
        pass
    # beside the repository (a sibling checkout of shared data): one step up, never towards "/"
    if root.parent != Path(root.anchor) and absolute.resolve().is_relative_to(root.parent):
        return Path(os.path.relpath(absolute.resolve(), root)).as_posix()
    return str(absolute)


def localize(path: str | os.PathLike[str], start: str | os.PathLike[str] | None = None) -> Path:
    """A path read from a file, as an absolute path on this machine.

    Args:
        path: the recorded path: absolute (files written before paths were portable, or outside a
            clone) or relative to the repository (:func:`portable`).
        start: a file or folder inside the repository the record belongs to (e.g. the run folder);
            default: the current directory.

    Returns:
        ``path`` itself if absolute, otherwise joined to the repository root above ``start``.
    """
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root(start) / p


@dataclass(frozen=True)
class Folder:
    """A folder that alone knows the names of its files (:class:`lungseg.rundir.RunDir`,
    :class:`lungseg.experimentdir.ExperimentDir`, :class:`~lungseg.experimentdir.ProfileDir`), usable
    wherever a path is.

    Args:
        path: the folder (it need not exist yet).
    """

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)
