"""Sphinx extension: splice a generated Markdown file into a page when the file exists.

A page containing the line ``<!-- optional-include: path/relative/to/repo.md -->`` gets that line
replaced by the file's text before parsing (so it is read as MyST), or by a short note saying the
file has not been generated yet. Used by the performance appendix for ``results/bench/bench.md``,
which only exists after ``lungseg bench`` has run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_MARKER = re.compile(r"^<!--\s*optional-include:\s*(?P<path>\S+)\s*-->\s*$", re.MULTILINE)


def _splice(app: Any, docname: str, source: list[str]) -> None:
    root = Path(app.srcdir)

    def replace(match: re.Match[str]) -> str:
        path = root / match.group("path")
        if path.is_file():
            return path.read_text(encoding="utf-8")
        return (
            "```{note}\n"
            f"`{match.group('path')}` has not been generated yet: the text around this note says which"
            " command writes it; rebuild the book afterwards to see it here.\n```\n"
        )

    source[0] = _MARKER.sub(replace, source[0])


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _splice)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
