"""The torch/torchvision pair is pinned alike in the Makefile and environment.yml, admitted by
pyproject's ranges, and scripts/install_torch.py picks the CPU index, its PyPI fallback or the
CUDA build as documented; the book's MathJax is served from the build."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"\b(torch|torchvision)==([0-9][0-9A-Za-z.+]*)", text))


def test_the_pair_is_pinned_alike_and_admitted_by_pyproject() -> None:
    from packaging.requirements import Requirement

    make = re.search(r"^TORCH_PINS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert make, "Makefile: no TORCH_PINS line"
    pins = _pins(make.group(1))
    assert set(pins) == {"torch", "torchvision"}
    assert _pins((ROOT / "environment.yml").read_text(encoding="utf-8")) == pins
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ranges = {Requirement(r).name: Requirement(r).specifier for r in project["dependencies"]}
    for name, version in pins.items():
        assert version in ranges[name], f"pyproject's {name}{ranges[name]} does not admit {version}"
    assert "seaborn" in ranges and "torchvision" in ranges
    assert "pydensecrf2" not in ranges  # only with the crf extra
    assert any(r.startswith("pydensecrf2") for r in project["optional-dependencies"]["crf"])


def test_installed_versions_match_the_pins() -> None:
    import torch
    import torchvision

    make = re.search(r"^TORCH_PINS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    pins = _pins(make.group(1))
    if torch.__version__.split("+")[0] != pins["torch"]:
        pytest.skip(f"this environment's torch {torch.__version__} is not the pinned one (not made by `make venv`)")
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]


def test_install_torch_command() -> None:
    it = _load("install_torch", ROOT / "scripts" / "install_torch.py")
    pins = ["torch==2.14.1", "torchvision==0.29.1"]
    cmd, what = it.pip_command(pins, gpu=False, reachable=lambda url: True)
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[cmd.index("--index-url") + 1] == it.CPU_INDEX and cmd[-2:] == pins and "CPU build" in what
    cmd, what = it.pip_command(pins, gpu=False, reachable=lambda url: False)
    assert "--index-url" not in cmd and cmd[-2:] == pins and "cannot be reached" in what
    cmd, what = it.pip_command(pins, gpu=True, reachable=lambda url: pytest.fail("no probe for --gpu"))
    assert "--index-url" not in cmd and "CUDA" in what
    for bad in (["torch"], ["torch>=2.2"], ["torch==2.*"], []):
        with pytest.raises(ValueError, match="pinned|give the pins"):
            it.pip_command(bad, gpu=False, reachable=lambda url: True)


def test_unreachable_index_is_detected_quickly() -> None:
    it = _load("install_torch", ROOT / "scripts" / "install_torch.py")
    assert it.index_reachable("http://127.0.0.1:9/simple", timeout=2.0) is False
    assert it.index_reachable("not a url", timeout=2.0) is False


def test_mathjax_extension_copies_mathjax_into_the_build(tmp_path: Path) -> None:
    ext = _load("mathjax_local", ROOT / "book" / "_ext" / "mathjax_local.py")
    try:
        source = ext.mathjax_source()
    except RuntimeError:
        pytest.skip("the book extra (django-static-mathjax) is not installed")

    class Builder:
        format = "html"

    class App:
        outdir = str(tmp_path)
        builder = Builder()

    class Config:
        mathjax_path = "https://cdn.example/mathjax.js"

    config = Config()
    ext._use_local(App(), config)
    assert config.mathjax_path == ext.MATHJAX_PATH and not config.mathjax_path.startswith("http")
    ext._copy(App(), None)
    served = tmp_path / "_static" / ext.MATHJAX_PATH
    assert served.is_file() and served.read_bytes() == (source / "tex-chtml.js").read_bytes()
    assert any((tmp_path / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert "mathjax_local: book/_ext" in (ROOT / "_config.yml").read_text(encoding="utf-8")


def test_the_crf_extra_is_a_separate_step_that_may_fail() -> None:
    # pydensecrf2 is source only (a C++ compiler and the Python headers): a machine without them still
    # gets a working .venv, and the Makefile says what was not installed and why
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    installs = re.findall(r'pip install[^\n]*-e "\.\[([a-z,]+)\]"([^\n]*)', text)
    assert installs, "Makefile: no `pip install -e .[extras]` line"
    for extras, rest in installs:
        if "crf" in extras.split(","):
            assert extras == "crf" and rest.strip().startswith("||"), "the crf extra must install alone and may fail"
    assert "C++ compiler" in text
