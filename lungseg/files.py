"""Writing files safely: atomic replacement and strict JSON.

Every file lungseg writes goes through a temporary file in the same folder and :func:`os.replace`,
so a crash (or a SIGKILL) never leaves a half-written config, checkpoint or result behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "check_output", "json_safe", "write_csv", "write_json"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


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
    """Write ``rows`` as CSV with a header (``columns``, default the first row's keys) atomically."""
    buf = io.StringIO()
    fields = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    if fields:
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def check_output(out: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str] | None], flag: str = "--out",
                 protected: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Refuse an output path that would write into an input: one guard for every verb.

    Args:
        out: the output file or folder (it need not exist).
        inputs: the verb's inputs (files or folders; ``None`` entries are skipped). The output may be
            none of them, lie inside none of them, and link into none of them (paths are compared
            after resolving symbolic links).
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
        if target == source:
            raise LungsegError(f"{flag} {out} is the input {given} itself; inputs are never overwritten")
        if source in target.parents:
            raise LungsegError(f"{flag} {out} lies inside the input {given}; inputs are never written to")
    for file in protected:
        if target == Path(file).resolve():
            raise LungsegError(f"{flag} {out} would overwrite {file}; choose another output path")
