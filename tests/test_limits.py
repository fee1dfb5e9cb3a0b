"""The bounds of lungseg.limits: each one documented where users look."""

from __future__ import annotations

from pathlib import Path

from lungseg import limits

ROOT = Path(__file__).resolve().parents[1]


def test_every_bound_is_documented_in_the_book() -> None:
    running = (ROOT / "book" / "running.md").read_text(encoding="utf-8")
    names = [n for n in limits.__all__ if n.startswith("MAX_")]
    assert names
    missing = [n for n in names if f"`{n}`" not in running]
    assert not missing, f"book/running.md does not document {missing}"


def test_the_help_line_names_the_module() -> None:
    assert "lungseg.limits" in limits.describe_limits()
