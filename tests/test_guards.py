"""Inputs are never overwritten, and bad arguments never give silent garbage (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.files import check_output

ROOT = Path(__file__).resolve().parents[1]


def _lungseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lungseg", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, make_npz, tiny) -> tuple[Path, Path]:
    from lungseg.training import train

    root = tmp_path_factory.mktemp("guards")
    data = make_npz(root / "d.npz", n_patients=6, per_patient=2, size=16)
    train(TrainConfig(data=str(data), epochs=1, **tiny), root / "run", progress=False)
    return data, root / "run"


def test_check_output_refuses_inputs_their_insides_and_links(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / "manifest.json").write_text("{}")
    (tmp_path / "link").symlink_to(study)
    for out in (study, study / "manifest.json", study / "new" / "x.json", tmp_path / "link" / "x.json"):
        with pytest.raises(LungsegError, match="input"):
            check_output(out, [study])
    check_output(tmp_path / "elsewhere.json", [study])  # fine
    with pytest.raises(LungsegError, match="would overwrite"):
        check_output(tmp_path / "a.json", [], protected=[tmp_path / "a.json"])


def test_evaluate_never_overwrites_its_data_or_the_run(trained: tuple[Path, Path]) -> None:
    data, run = trained
    before = data.read_bytes()
    for out in (data, run / "config.json", run / "best.pt"):
        done = _lungseg("evaluate", "--run", str(run), "--data", str(data), "--out", str(out), "--quiet")
        assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert data.read_bytes() == before
    assert json.loads((run / "config.json").read_text())["epochs"] == 1


def test_train_never_writes_into_its_data(make_npz, tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    data = make_npz(study / "d.npz", n_patients=4, per_patient=2, size=16)
    for out in (data, data / "run"):
        done = _lungseg("train", "--data", str(data), "--out", str(out), "--epochs", "1", "--quiet")
        assert done.returncode == 2 and "input" in done.stderr, done.stderr
    assert sorted(p.name for p in study.iterdir()) == ["d.npz"]


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "batch-size"), (["--batch-size", "-1"], "batch-size"), (["--n-boot", "-3"], "n-boot"),
])
def test_evaluate_refuses_bad_numbers(trained: tuple[Path, Path], tmp_path: Path, flags: list[str], message: str) -> None:
    data, run = trained
    done = _lungseg("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "m.json"), *flags)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "m.json").exists()


def test_evaluate_refuses_non_finite_intensities(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    z = dict(np.load(data))
    z["images"] = z["images"].copy()
    z["images"][0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **z)
    from lungseg.evaluation import evaluate_run

    with pytest.raises(LungsegError, match="NaN or infinite"):
        evaluate_run(run, str(tmp_path / "nan.npz"), split="all", n_boot=0, progress=False, device="cpu")


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("inf"), "lr"), ("lr", float("nan"), "lr"), ("warmup_epochs", -5, "warmup_epochs"),
    ("epochs", 1.5, "epochs"), ("batch_norm", "yes", "batch_norm"), ("split_fractions", [0.5, 0.5], "split_fractions"),
    ("flip_ud", 1.5, "flip_ud must be a probability"), ("zoom", 0.8, "zoom must be finite and >= 1"),
    ("max_rotation_deg", -3.0, "max_rotation_deg"), ("hu_offset", float("inf"), "hu_offset"),
])
def test_config_fields_are_typed_and_checked(field: str, value: object, message: str) -> None:
    with pytest.raises(LungsegError, match=message):
        TrainConfig.from_dict({field: value}).validate()


def test_a_wrong_config_type_leaves_no_run_directory(make_npz, tmp_path: Path) -> None:
    data = make_npz(tmp_path / "d.npz", n_patients=4, per_patient=2, size=16)
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 1.5}))
    done = _lungseg("train", "--data", str(data), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "c.json"))
    assert done.returncode == 2 and "'epochs' must be int" in done.stderr
    assert not (tmp_path / "run").exists()


def test_resume_works_when_killed_before_the_first_checkpoint(make_npz, tmp_path: Path) -> None:
    """Only the config exists (killed while reading the data): --resume takes the saved settings."""
    from lungseg.rundir import RunDir

    data = make_npz(tmp_path / "d.npz", n_patients=6, per_patient=2, size=16)
    run = RunDir(tmp_path / "run").create()
    run.write_config(TrainConfig(data=str(data), epochs=1, base_channels=4, depth=2, batch_size=8, device="cpu",
                                 lr=5e-4))
    (run.path / ".last.pt.tmp12345").write_bytes(b"partial")
    done = _lungseg("train", "--out", str(run.path), "--resume", "--quiet")
    assert done.returncode == 0, done.stderr
    saved = run.read_config()
    assert saved.lr == 5e-4 and saved.base_channels == 4  # not the defaults
    assert not (run.path / ".last.pt.tmp12345").exists()


def test_evaluate_auto_refuses_a_run_without_test_patients(make_npz, tiny, tmp_path: Path) -> None:
    from lungseg.evaluation import evaluate_run
    from lungseg.training import train

    data = make_npz(tmp_path / "d.npz", n_patients=6, per_patient=2, size=16)
    train(TrainConfig(data=str(data), epochs=1, split_fractions=(0.7, 0.3, 0.0), **tiny), tmp_path / "run",
          progress=False)
    with pytest.raises(LungsegError, match="no test patients"):
        evaluate_run(tmp_path / "run", str(data), n_boot=0, progress=False, device="cpu")


def test_the_augmentation_fields_make_the_samplers_augmentation() -> None:
    config = TrainConfig(flip_ud=0.0, max_rotation_deg=5.0, zoom=1.0, hu_scale=0.2, hu_offset=0.0)
    aug = config.augment_config()
    assert (aug.flip_lr, aug.flip_ud, aug.max_rotation_deg, aug.zoom, aug.hu_scale, aug.hu_offset) == (0.5, 0.0, 5.0, 1.0, 0.2, 0.0)
    assert TrainConfig(augment=False).augment_config() is None
