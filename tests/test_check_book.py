"""scripts/check_book.py's maths check: raw TeX left in a rendered page, or MathJax from another
host, is an error (the browser part needs Chromium, which `make check-book` installs)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cb():
    spec = importlib.util.spec_from_file_location("check_book", ROOT / "scripts" / "check_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("text", ["the loss $$L = 1 - D$$ is", r"where \(p_t\) is", r"\[ x \]", r"\begin{align} a \end{align}"])
def test_raw_tex_is_found(cb, text: str) -> None:
    assert len(cb.raw_tex(text)) == 1  # one finding per formula


@pytest.mark.parametrize("text", ["costs $5 and $6", "Dice 0.83 (95 % CI 0.80-0.86)", "a path C:/x and [1]", ""])
def test_plain_text_is_not_tex(cb, text: str) -> None:
    assert cb.raw_tex(text) == []


def test_math_problems(cb) -> None:
    ok = {"text": "typeset", "scripts": ["http://127.0.0.1:8000/_static/mathjax/tex-chtml.js"], "typeset": True}
    assert cb.math_problems(ok, "127.0.0.1:8000", has_math=True) == []
    cdn = dict(ok, scripts=["https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"])
    assert any("another host" in e for e in cb.math_problems(cdn, "127.0.0.1:8000", has_math=True))
    raw = dict(ok, text=r"eq. \(x\) not typeset", typeset=False)
    errors = cb.math_problems(raw, "127.0.0.1:8000", has_math=True)
    assert any("raw TeX" in e for e in errors) and any("did not start" in e for e in errors)
    assert cb.math_problems(dict(ok, typeset=False, scripts=[]), "h", has_math=False) == []


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")), reason="needs chromium and chromedriver")
def test_a_page_with_raw_tex_fails_in_the_browser(cb, tmp_path: Path) -> None:
    pytest.importorskip("selenium")
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text("<html><head><title>ok</title></head><body><p>fine</p></body></html>")
    (html / "bad.html").write_text(r"<html><head><title>bad</title></head><body><p>left: \(x^2\)</p>"
                                   "<pre>code may hold $$ and \\(</pre></body></html>")
    assert cb.main([str(html), "--out", str(tmp_path / "shots")]) == 1
    report = json.loads((tmp_path / "shots" / "check_book.json").read_text())
    errors = {p["page"]: p["errors"] for p in report["pages"]}
    assert errors["index.html"] == []
    assert len(errors["bad.html"]) == 1 and "raw TeX" in errors["bad.html"][0] and "x^2" in errors["bad.html"][0]
