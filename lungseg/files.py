"""Writing files safely: atomic replacement, strict JSON and the output guard.

Every file lungseg writes goes through :func:`atomic_file`: a temporary file in the same folder,
flushed to disk with :func:`os.fsync`, then moved onto its name with :func:`os.replace`. A file
under its final name is therefore always complete (a crash or a SIGKILL leaves at most a hidden
``.<name>.tmp<pid>``), and two processes writing one name leave one of the two files, never a mix.
:func:`check_output` refuses, before anything is written, an output that is (or lies inside) one
of the verb's inputs, comparing *files* (device and inode) as well as resolved paths.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "atomic_file", "atomic_write_bytes", "atomic_write_text", "check_output", "json_safe", "read_csv", "temporary_path",
    "write_csv", "write_json",
]


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """The temporary file :func:`atomic_file` writes before ``path`` exists: ``.<name>.tmp<pid>`` beside it
    (hidden, and never a name lungseg reads; the pid keeps two processes' files apart)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s contents into; ``path`` appears, complete, only when the block ends.

    The data goes to :func:`temporary_path` in the same folder (so the final :func:`os.replace` is a
    rename on one file system), is flushed and fsynced, and then replaces ``path`` in one step. If the
    block raises, the temporary file is removed and ``path`` is left as it was. Replacing the name
    never writes into the file it named before, so even a hard link to ``path`` keeps its contents.

    Args:
        path: the file to write (its folder must exist).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` with :func:`atomic_file`; returns the path."""
    with atomic_file(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(x: Any) -> Any:
    """``x`` with NumPy scalars made plain and non-finite floats made ``None`` (strict JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as strict, indented JSON (NaN → ``null``) atomically, creating the folder; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(p, json.dumps(json_safe(obj), indent=2) + "\n")


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV with a header (``columns``, default the first row's keys) atomically.

    A name ending in ``.gz`` is written gzip-compressed, with no time stamp or file name in its header,
    so that the same rows give the same bytes (with one Python and zlib: a published table changes only
    when its rows do).
    """
    buf = io.StringIO()
    fields = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    if fields:
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if Path(path).name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    return atomic_write_bytes(path, data)


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as :func:`write_csv` writes it (gzip-compressed where the name
    ends in ``.gz``).

    Raises:
        LungsegError: the file is not gzip data although its name ends in ``.gz``, or is not UTF-8 text.
    """
    from lungseg.errors import LungsegError

    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except (gzip.BadGzipFile, zlib.error, EOFError, UnicodeDecodeError) as err:
        raise LungsegError(f"{path}: not a readable CSV table ({'gzip-compressed ' if path.name.endswith('.gz') else ''}"
                           f"UTF-8 text expected): {err}") from None


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file or folder ``path`` names (symbolic links followed), or ``None``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _same(a: Path, b: Path, b_identity: tuple[int, int] | None) -> bool:
    """Whether ``a`` and ``b`` (both resolved) are one file: the same path, or the same device and inode."""
    return a == b or (b_identity is not None and _identity(a) == b_identity)


def check_output(out: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str] | None], flag: str = "--out",
                 protected: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Refuse an output path that would write into an input: one guard for every verb.

    Files are compared, not only their names: a hard link to an input, a symbolic link to it, or
    another path to one of its folders is refused like the input itself.

    Args:
        out: the output file or folder (it need not exist). Callers check every file they write
            (derived names included), before writing any of them.
        inputs: the verb's inputs (files or folders; ``None`` entries are skipped). The output may be
            none of them and lie inside none of them.
        flag: the option's name, for the message.
        protected: further files the output must not be (e.g. a run's own files, for ``evaluate``).

    Raises:
        LungsegError: naming the output and the input it would overwrite.
    """
    from lungseg.errors import LungsegError

    target = Path(out).resolve()
    for given in inputs:
        if given is None or not str(given):
            continue
        source = Path(given).resolve()
        source_id = _identity(source)
        if _same(target, source, source_id):
            raise LungsegError(f"{flag} {out} is the input {given} itself; inputs are never overwritten")
        if any(_same(folder, source, source_id) for folder in target.parents):
            raise LungsegError(f"{flag} {out} lies inside the input {given}; inputs are never written to")
    for file in protected:
        resolved = Path(file).resolve()
        if _same(target, resolved, _identity(resolved)):
            raise LungsegError(f"{flag} {out} would overwrite {file}; choose another output path")
