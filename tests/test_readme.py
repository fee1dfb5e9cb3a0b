"""README's first screen says what to do: read the book, segment a CT, retrain at paper scale, and
what a machine needs (including the C++ compiler that the CRF's pydensecrf2 is built with)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FIRST_SCREEN = 40


def _first_screen() -> str:
    return "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN])


def test_the_first_screen_names_the_three_paths() -> None:
    screen = _first_screen().lower()
    for words in ("read the book", "segment my ct", "retrain at paper scale"):
        assert words in screen, f"README's first {FIRST_SCREEN} lines do not say {words!r}"


def test_the_first_screen_links_the_published_book() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url = config["html"]["baseurl"]
    assert url.startswith("https://") and url in _first_screen()


def test_segment_my_ct_is_three_commands_with_a_published_model() -> None:
    screen = _first_screen()
    block = re.search(r"\*\*Segment my CT\*\*.*?```bash\n(.*?)```", screen, re.DOTALL)
    assert block, "no command block after 'Segment my CT'"
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 3 and commands[-1].startswith("lungseg predict")
    model = re.search(r"--model (\S+)", commands[-1]).group(1)
    assert model.startswith("results/real-ct/"), f"{model}: the first command for a real scan is the real-CT model"
    with zipfile.ZipFile(ROOT / model) as bundle:  # a published `lungseg export` archive, with its model card
        assert any(name.endswith("/docs/README.md") for name in bundle.namelist())
    # says what the model is not, and what the book's phantom-only models are
    assert "not for clinical use" in screen and "misses large central tumours" in screen
    assert "trained on the synthetic phantom" in screen


def test_the_first_screen_says_what_a_machine_needs() -> None:
    screen = _first_screen()
    assert "Python ≥ 3.10" in screen and "GPU" in screen
    assert "pydensecrf2" in screen and "C++" in screen and "Python headers" in screen
