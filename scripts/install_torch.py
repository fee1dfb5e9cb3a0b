#!/usr/bin/env python
"""Install the pinned torch/torchvision pair into the running interpreter (the Makefile's venv step).

Without ``--gpu`` the CPU build comes from the PyTorch CPU index (about 200 MB for torch, no CUDA
libraries). When that index cannot be reached (a machine that reaches only PyPI, or a mirror of it),
the same pins are installed from the configured indexes instead: pip's own configuration (for
example ``find-links`` to local wheels) then decides which build comes. With ``--gpu`` the pins
come from PyPI, whose Linux wheels are the CUDA builds (several GB with their ``nvidia-*`` wheels).

Usage:
    python scripts/install_torch.py [--gpu] [--cpu-index URL] [--dry-run] torch==X torchvision==Y

Only the standard library is used: this runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 10.0


def index_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the simple index at ``url`` answers for the ``torch`` project within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout) as response:  # noqa: S310
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pip_command(
    pins: Sequence[str],
    gpu: bool,
    cpu_index: str = CPU_INDEX,
    reachable: Callable[[str], bool] = index_reachable,
) -> tuple[list[str], str]:
    """The ``pip install`` command for ``pins`` and a line saying which build it installs.

    Args:
        pins: requirement strings, each pinned with ``==`` (``torch==2.14.1``).
        gpu: install the CUDA build (PyPI's Linux wheels) rather than the CPU build.
        cpu_index: the PyTorch CPU wheel index.
        reachable: probe for an index URL (replaced in tests).

    Raises:
        ValueError: a pin that is not ``name==version`` (an unpinned torch could pull any newer build).
    """
    if not pins:
        raise ValueError("install_torch.py: give the pins, e.g. torch==2.14.1 torchvision==0.29.1")
    for pin in pins:
        name, sep, version = pin.partition("==")
        if not sep or not name or not version or any(c in version for c in "<>=!~*,"):
            raise ValueError(f"install_torch.py: {pin!r} is not pinned as name==version")
    base = [sys.executable, "-m", "pip", "install", "--quiet"]
    if gpu:
        return base + list(pins), "CUDA build from PyPI (--gpu)"
    if reachable(cpu_index):
        return base + ["--index-url", cpu_index] + list(pins), f"CPU build from {cpu_index}"
    note = f"{cpu_index} cannot be reached: the pins come from the configured indexes (PyPI or local wheels)"
    return base + list(pins), note


def main(argv: Sequence[str] | None = None) -> int:
    """Run the install; the exit status is pip's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pins", nargs="+", help="torch==X torchvision==Y")
    parser.add_argument("--gpu", action="store_true", help="install the CUDA build from PyPI")
    parser.add_argument("--cpu-index", default=CPU_INDEX, help=f"the CPU wheel index (default {CPU_INDEX})")
    parser.add_argument("--dry-run", action="store_true", help="print the command, install nothing")
    args = parser.parse_args(argv)
    try:
        command, what = pip_command(args.pins, args.gpu, args.cpu_index)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"install_torch: {' '.join(args.pins)}: {what}", flush=True)
    if args.dry_run:
        print(" ".join(command))
        return 0
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
