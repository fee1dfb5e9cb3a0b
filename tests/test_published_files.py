"""The published files name no folder of the machine that made them.

Every tracked text file under ``results/``, ``notebooks/`` and ``book/`` (measurements, executed
chapters, book pages) is scanned for absolute paths of a building machine, and so is every archive
there: the text members of a model ``.zip`` and the pickled configuration inside a checkpoint (a
``.pt`` is a zip whose ``data.pkl`` holds the strings). Paths in these files are recorded relative to
the repository (:func:`lungseg.paths.portable`).
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ("results", "notebooks", "book")
#: Folders that only a building machine's absolute path would name (POSIX homes, temporary and work
#: folders, macOS and Windows homes). ``/content/`` (Colab's clone in the install cells) is not one.
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/tmp/|/home/|/Users/|[A-Za-z]:\\\\Users\\\\)")


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", *PUBLISHED], cwd=ROOT, capture_output=True, check=True,
                                timeout=60).stdout.decode().split("\0")
        files = [ROOT / name for name in listed if name]
    except (OSError, subprocess.SubprocessError):  # not a git checkout (an unpacked archive)
        files = [p for folder in PUBLISHED for p in (ROOT / folder).rglob("*") if p.is_file()]
    return files


def _tracked_text_files() -> list[Path]:
    text = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" not in head:  # weights and images are binary; their embedded configs are not published text
            text.append(path)
    return text


def test_the_scan_covers_the_published_folders() -> None:
    files = _tracked_text_files()
    for folder in PUBLISHED:
        assert any(p.relative_to(ROOT).parts[0] == folder for p in files), f"no text file found under {folder}/"


@pytest.mark.parametrize("text, found", [
    ('"data": "/work/main/data/phantom-medium"', True),
    ("runs in /home/ana/lungseg/results/medium", True),
    ('"data": "data/phantom-medium"', False),
    ('"series": "../shared/realct/lidc-idri-0314/ct"', False),
    ('os.chdir("/content/lungseg/notebooks")', False),
])
def test_machine_paths_are_recognised(text: str, found: bool) -> None:
    assert bool(MACHINE_PATH.search(text)) is found


def test_no_published_file_names_a_folder_of_the_building_machine() -> None:
    found = []
    for path in _tracked_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if match := MACHINE_PATH.search(line):
                excerpt = line[max(0, match.start() - 30):match.end() + 40]
                found.append(f"{path.relative_to(ROOT)}:{number}: ...{excerpt}...")
    assert not found, (f"{len(found)} line(s) of published files name an absolute path of the machine that made "
                       "them (record paths with lungseg.paths.portable; re-execute the chapters):\n"
                       + "\n".join(found[:40]))


def _archive_texts(path: Path) -> list[tuple[str, str]]:
    """``(member, text)`` of an archive's text members and of a checkpoint's pickle (read as Latin-1)."""
    texts = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            if info.filename.endswith("data.pkl") or b"\0" not in data[:8192]:
                texts.append((info.filename, data.decode("latin-1")))
    return texts


def test_the_archive_scan_reads_a_checkpoints_configuration(tmp_path: Path) -> None:
    import torch

    torch.save({"model": {"w": torch.zeros(2)}, "config": {"data": "/work/main/data/phantom-medium"}}, tmp_path / "c.pt")
    assert any(MACHINE_PATH.search(text) for _, text in _archive_texts(tmp_path / "c.pt"))


def test_no_published_archive_names_a_folder_of_the_building_machine() -> None:
    archives = [p for p in _tracked_files() if p.is_file() and zipfile.is_zipfile(p)]
    assert archives, "no published checkpoint or model archive found"
    found = [f"{path.relative_to(ROOT)}!{member}: ...{text[max(0, m.start() - 30):m.end() + 40]!r}..."
             for path in archives for member, text in _archive_texts(path) if (m := MACHINE_PATH.search(text))]
    assert not found, f"{len(found)} archive member(s) name an absolute path of the building machine:\n" + "\n".join(found[:20])
