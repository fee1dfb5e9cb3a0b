"""``benchmarks/training_study_size.py --collect-only`` never replaces the published table by an empty one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_collecting_without_scored_runs_keeps_the_published_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("training_study_size", ROOT / "benchmarks" / "training_study_size.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "ROOT", tmp_path)  # a regression writes into tmp_path, not into results/
    monkeypatch.setattr(script, "RUNS", tmp_path / "runs" / "study-size")
    published = tmp_path / "results" / "medium" / "training-study-size.json"
    published.parent.mkdir(parents=True)
    published.write_text("{}")
    with pytest.raises(SystemExit, match=r"no scored run under runs/study-size; results/medium/training-study-size"
                                         r"\.json is left as it is"):
        script.main(["--collect-only"])
    assert published.read_text() == "{}"
