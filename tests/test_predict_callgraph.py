"""`lungseg predict`, read from the command line to the written file, is a descent: no lungseg file
calls back into a file above it in the chain (cli -> orchestration -> predictor -> writers).

The test runs small predictions in-process under :func:`sys.setprofile`, records every call between
two files of ``lungseg/`` (caller file -> callee file; a call made through a library, such as a
network's ``forward`` reached through ``torch.nn.Module.__call__``, counts for the nearest lungseg
caller), and asserts that this file-level call graph has no cycle.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import lungseg
from lungseg.cli import main

PACKAGE = Path(lungseg.__file__).resolve().parent


def _lungseg_file(frame: Any) -> str | None:
    """The frame's file relative to lungseg/ when it is package code run as a function (not a module body)."""
    filename = frame.f_code.co_filename
    if not filename.startswith(str(PACKAGE)) or frame.f_code.co_name == "<module>":
        return None
    return str(Path(filename).relative_to(PACKAGE))


def _call_graph(argv: list[str]) -> set[tuple[str, str]]:
    """``{(caller file, callee file)}`` of ``lungseg <argv>`` run in-process."""
    edges: set[tuple[str, str]] = set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = _lungseg_file(frame)
        if callee is None:
            return
        caller = frame.f_back
        while caller is not None and _lungseg_file(caller) is None:  # through library frames (torch, tqdm, ...)
            if caller.f_code.co_filename.startswith(str(PACKAGE)):  # a module body: an import, not a call
                return
            caller = caller.f_back
        if caller is not None and _lungseg_file(caller) != callee:
            edges.add((_lungseg_file(caller), callee))

    sys.setprofile(profile)
    try:
        status = main(argv)
    finally:
        sys.setprofile(None)
    assert status == 0, f"lungseg {' '.join(argv)} exited with {status}"
    return edges


def _cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as a list of files, or ``None``."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.fixture(scope="module")
def setup(tiny, make_npz, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny attention run, its exported ``.zip``, and a 4-slice phantom DICOM series."""
    from lungseg.config import TrainConfig
    from lungseg.data.phantom import PhantomConfig, generate_study
    from lungseg.inference.bundle import export_model
    from lungseg.training import train

    root = tmp_path_factory.mktemp("callgraph")
    data = make_npz(root / "hu.npz", n_patients=4, per_patient=2, size=32, seed=2)
    train(TrainConfig(data=str(data), model="attention", epochs=1, **tiny), root / "run", progress=False)
    study = generate_study(root / "study", 1, seed=1, config=PhantomConfig(image_size=32, n_slices=4), progress=False)
    series = next(p / "ct" for p in study.iterdir() if p.is_dir())
    return {"root": root, "run": root / "run", "zip": export_model(root / "run", root / "model.zip"),
            "series": series, "data": data}


@pytest.mark.parametrize("model, extra", [
    ("run", ["--prob", "--attention"]),
    ("zip", ["--prob", "--format", "dicom-seg", "--threshold", "0.5"]),
    ("zip", ["--crf"]),
])
def test_predict_from_the_command_line_is_a_descent(setup: dict[str, Path], model: str, extra: list[str],
                                                    tmp_path: Path) -> None:
    out = tmp_path / ("seg.dcm" if "dicom-seg" in extra else "mask.nii.gz")
    argv = ["predict", str(setup["series"]), "--model", str(setup[model]), "--out", str(out), "--device", "cpu",
            "--quiet", *extra]
    main(argv)  # once unprofiled: lazy imports run here, so that the profiled run sees calls only
    edges = _call_graph(argv)
    assert out.is_file()
    cycle = _cycle(edges)
    assert cycle is None, "a file calls back into a file above it: " + " -> ".join(cycle or [])
    files = {f for edge in edges for f in edge}
    assert {"cli.py", "inference/predict.py", "inference/predictor.py", "inference/writers.py"} <= files, sorted(files)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]
    assert _cycle({("a", "b"), ("a", "c"), ("b", "c")}) is None
