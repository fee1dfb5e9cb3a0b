"""Provenance of a run: git commit, package versions, device and wall time.

Every training run writes ``provenance.json`` next to its checkpoints and the book prints the same
record under each chapter, so a number can always be traced back to the code and machine that
produced it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PACKAGES: tuple[str, ...] = (
    "lungseg",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pydicom",
    "nibabel",
    "pillow",
    "pydensecrf2",
    "tqdm",
    "pandas",
    "seaborn",
    "matplotlib",
    "monai",
)


def git_commit(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The git commit of the repository holding ``path`` (default: this package).

    Returns:
        ``{"commit": sha or None, "dirty": bool or None}``; ``None`` when git or the repository is
        unavailable (e.g. an installed wheel).
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``packages`` (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_name(device: str | None = None) -> str:
    """A human-readable name of ``device`` (default: the device ``auto`` would pick)."""
    import torch

    from lungseg.device import resolve_device

    dev = resolve_device(device or "auto")
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "mps: Apple GPU"
    cpu = platform.processor() or platform.machine()
    return f"cpu: {cpu} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def collect(device: str | None = None, started: float | None = None) -> dict[str, Any]:
    """The full provenance record.

    Args:
        device: the device used (``"cpu"``, ``"cuda"``, ...); ``None`` for the auto choice.
        started: a ``time.time()`` stamp; when given, ``wall_time_s`` is the time elapsed since.

    Returns:
        A JSON-serialisable dict with ``git``, ``packages``, ``python``, ``platform``, ``device``,
        ``time_utc`` and ``wall_time_s``.
    """
    return {
        "git": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_name(device),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if started is None else round(time.time() - started, 3),
    }


def format_provenance(record: dict[str, Any]) -> str:
    """A few lines summarising ``record`` for printing under a notebook chapter."""
    git = record.get("git", {})
    commit = (git.get("commit") or "unknown")[:12] + (" (modified)" if git.get("dirty") else "")
    pk = record.get("packages", {})
    versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    lines = [
        f"commit: {commit}",
        f"device: {record.get('device')}",
        f"python {record.get('python')}; {versions}",
        f"date: {record.get('time_utc')}",
    ]
    if record.get("wall_time_s") is not None:
        lines.append(f"wall time: {record['wall_time_s']:.1f} s")
    return "\n".join(lines)
