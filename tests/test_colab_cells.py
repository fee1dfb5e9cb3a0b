"""The repository's address lives in one place, `_config.yml`: every chapter's Colab install cell is
the one scripts/colab_cells.py writes from it, and no other file spells the address."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("colab_cells", ROOT / "scripts" / "colab_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Files read where the book's substitutions do not run, which spell the address out: they must spell
#: ``_config.yml``'s, and this test names them when it changes.
SPELLED_OUT = frozenset({"README.md", "CITATION.cff"})


def _tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    out = []
    for name in names:
        path = ROOT / name
        if path.suffix in {".md", ".ipynb", ".yml", ".yaml", ".py", ".toml", ".txt", ".cfg", ".html", ".rst", ".cff", ""} \
                and path.is_file():
            out.append(path)
    return out


def test_every_chapter_install_cell_is_written_from_the_config() -> None:
    cells = _script()
    url = cells.repository_url()
    assert cells.check(url) == []
    chapters = cells.chapters()
    assert len(chapters) >= 9
    for md in chapters:
        cell = cells.md_cell(md)
        assert url in cell
        assert "[book]" not in cell  # only lungseg and what Colab lacks
        assert ("pydensecrf2" in cell) == (md.name[:2] in cells.CRF_CHAPTERS)


def test_crf_chapters_are_those_that_run_the_crf() -> None:
    cells = _script()
    uses_crf = {md.name[:2] for md in cells.chapters()
                if any(k in md.read_text(encoding="utf-8") for k in ("crf=True", "refine_batch", "refine(", "run_experiment",
                                                                     "run_profile"))}
    assert uses_crf <= set(cells.CRF_CHAPTERS)


def test_the_address_is_spelled_only_in_the_config_and_the_generated_cells() -> None:
    cells = _script()
    url = cells.repository_url()
    config = ROOT / "_config.yml"
    assert config.read_text(encoding="utf-8").count(url) == 1
    stray = []
    for path in _tracked_text_files():
        if path in (config, Path(__file__).resolve()):
            continue  # the one place, and this test's own search string
        text = path.read_text(encoding="utf-8", errors="replace")
        if url not in text and "github.com/lungseg/lungseg" not in text:
            continue
        if path.parent == ROOT / "notebooks" and path.suffix in (".md", ".ipynb"):
            # allowed only inside the generated cell (checked equal to colab_cell above)
            md = path.with_suffix(".md")
            cell = cells.expected_cell(md, url)
            rest = text.replace(cell, "") if path.suffix == ".md" else text
            if path.suffix == ".ipynb":
                rest = "".join(line for line in text.splitlines(keepends=True) if "git\\\", \\\"clone\\\"" not in line)
            if url in rest or "github.com/lungseg/lungseg" in rest:
                stray.append(str(path.relative_to(ROOT)))
            continue
        if path.relative_to(ROOT).as_posix() in SPELLED_OUT:
            # read where no substitution runs (GitHub's front page, citation tools): the config's address, exactly
            addresses = set(re.findall(r"https?://github\.com/[\w.-]+/[\w.-]+", text))
            if addresses <= {url}:
                continue
        stray.append(str(path.relative_to(ROOT)))
    assert stray == [], f"the repository address is spelled outside _config.yml: {stray}; use {{{{ repository_url }}}}"


def test_colab_cell_changes_with_the_config(tmp_path: Path) -> None:
    cells = _script()
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: &repository_url https://example.org/me/fork\n", encoding="utf-8")
    url = cells.repository_url(config)
    assert url == "https://example.org/me/fork"
    cell = cells.colab_cell(url, crf=False)
    assert url in cell and "pydensecrf2" not in cell
    compile(cell, "<colab cell>", "exec")  # valid Python
    config.write_text("title: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="repository.url"):
        cells.repository_url(config)
