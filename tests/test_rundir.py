"""The run directory: paths, atomic writes, safe checkpoint loading, freshness of evaluations."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.files import write_csv
from lungseg.rundir import RunDir, per_image_csv_path

ROOT = Path(__file__).resolve().parents[1]


class _RunsCode:
    """A pickle that runs a shell command when it is loaded (what a malicious shared model would hold)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_paths_and_round_trips(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    assert run.checkpoint_path("best").name == "best.pt" and run.evaluation_path(True).name == "eval_crf_on.json"
    assert run.per_image_path(False) == per_image_csv_path(run.evaluation_path(False))
    with pytest.raises(LungsegError, match="checkpoint must be one of"):
        run.checkpoint_path("latest")
    run.write_config(TrainConfig(model="unet"))
    assert run.read_config().model == "unet"
    run.write_split({"train": ["a"], "val": ["b"], "test": []}, seed=1, fractions=(0.5, 0.5, 0.0), data="d")
    assert run.read_split() == {"train": ["a"], "val": ["b"], "test": []}
    run.write_history([{"epoch": 1, "train_loss": 0.5, "val_dice": 0.25, "lr": 1e-3, "time_s": 1.0}])
    assert run.read_history()[0]["epoch"] == 1
    assert not run.holds_run() and not run.is_finished()
    assert not any(p.name.startswith(".") for p in run.path.iterdir())  # no temporary files left behind


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "payload": _RunsCode(marker)}, run.checkpoint_path("best"))
    with pytest.raises(LungsegError, match="weights_only"):
        run.load_checkpoint("best")
    assert not marker.exists()


@pytest.mark.parametrize("verb", ["predict", "evaluate", "resume"])
def test_no_verb_runs_code_from_a_checkpoint(make_npz, tiny, tmp_path: Path, verb: str) -> None:
    """The defect of issue 14: a shared best.pt/last.pt ran `os.system` on predict, evaluate and resume."""
    from lungseg.training import train

    data = make_npz(tmp_path / "d.npz", n_patients=6, per_patient=2, size=16)
    run = tmp_path / "run"
    train(TrainConfig(data=str(data), epochs=1, **tiny), run, progress=False)
    marker = tmp_path / "pwned"
    which = "last" if verb == "resume" else "best"
    state = torch.load(run / f"{which}.pt", weights_only=True)
    state["payload"] = _RunsCode(marker)
    torch.save(state, run / f"{which}.pt")
    args = {
        "predict": ["predict", str(data), "--run", str(run), "--out", str(tmp_path / "out.npz")],
        "evaluate": ["evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "m.json")],
        "resume": ["train", "--out", str(run), "--resume", "--data", str(data), "--epochs", "1",
                   "--base-channels", "4", "--depth", "2", "--batch-size", "8", "--device", "cpu"],
    }[verb]
    done = subprocess.run([sys.executable, "-m", "lungseg", *args, "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "weights_only" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


def test_half_precision_checkpoints_load_as_float32(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    run.save_checkpoint("best", {"model": {"w": torch.randn(3, 3), "n": torch.tensor(2)}, "epoch": 4})
    original = run.load_checkpoint("best")["model"]["w"]
    run.compact_checkpoint("best")
    back = run.load_checkpoint("best")
    assert back["model"]["w"].dtype == torch.float32 and back["epoch"] == 4
    assert torch.allclose(back["model"]["w"], original, atol=1e-3) and back["model"]["n"].dtype == torch.int64


def test_a_compacted_checkpoint_names_no_folder_of_the_machine() -> None:
    """Paths inside the repository are recorded relative to it (the published grid's checkpoints)."""
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # inside the repository, as runs/ is
        run = RunDir(Path(tmp) / "run").create()
        data = str(ROOT / "data" / "phantom-medium")
        run.save_checkpoint("best", {"model": {"w": torch.ones(1)}, "epoch": 1,
                                     "config": {"data": data, "cache_dir": None, "lr": 0.002}})
        run.compact_checkpoint("best")
        config = run.load_checkpoint("best")["config"]
    assert config == {"data": "data/phantom-medium", "cache_dir": None, "lr": 0.002}


def test_evaluation_freshness_follows_the_best_epoch_not_file_times(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    run.save_checkpoint("best", {"model": {}, "epoch": 3})
    run.evaluation_path(False).write_text(json.dumps({"checkpoint_epoch": 3, "crf": False, "checkpoint": "best",
                                                       "split": "test"}))
    os.utime(run.evaluation_path(False), (0, 0))  # older than the weights: still the same epoch
    assert run.evaluation_is_fresh(False) and not run.evaluation_is_fresh(True)
    run.save_checkpoint("best", {"model": {}, "epoch": 5})
    assert not run.evaluation_is_fresh(False)


def test_cleanup_touches_only_the_runs_own_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path).create()
    for name in (".last.pt.tmp123", ".metrics.json.tmp9", ".viminfo.tmp", ".notes.tmpx", "metrics.json", "best.pt",
                 "mine.txt"):
        (tmp_path / name).write_text("x")
    run.write_config(TrainConfig())
    assert sorted(p.name for p in run.remove_partial_files()) == [".last.pt.tmp123", ".metrics.json.tmp9"]
    run.remove_results()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmpx", ".viminfo.tmp", "config.json", "mine.txt"]


def test_fields_added_later_read_as_what_an_older_run_did(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    run.write_config(TrainConfig(model="unet", patch_size=96, dice_reduction="image", flip_ud=0.5, zoom=1.3))
    new = run.read_config()
    assert (new.dice_reduction, new.patch_size, new.flip_ud, new.zoom) == ("image", 96, 0.5, 1.3)
    saved = json.loads(run.config_path.read_text())
    for field in ("dice_reduction", "patch_size", "flip_ud", "zoom"):
        del saved[field]
    run.config_path.write_text(json.dumps(saved))
    old = run.read_config()
    # before per-image Dice pooling, patch training and the augmentation fields existed, runs pooled
    # over the batch, saw whole slices, were never flipped up-down and zoomed by up to 1.15
    assert (old.dice_reduction, old.patch_size, old.flip_ud, old.zoom) == ("batch", None, 0.0, 1.15)
    assert old.model == "unet"


def test_per_image_tables_are_compressed_deterministic_and_old_plain_tables_still_read(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    rows = [{"image_id": "p:0", "patient_id": "p", "tp": 3}, {"image_id": "p:1", "patient_id": "p", "tp": 0}]
    path = write_csv(run.per_image_path(False), rows)
    assert path.name == "eval_crf_off_per_image.csv.gz" and path.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    first = path.read_bytes()
    assert first[4:8] == b"\0\0\0\0"  # no time stamp in the header (RFC 1952 MTIME)...
    write_csv(path, rows)
    assert path.read_bytes() == first  # ...so the same rows give the same bytes
    assert run.read_per_image(False) == [{"image_id": "p:0", "patient_id": "p", "tp": "3"},
                                         {"image_id": "p:1", "patient_id": "p", "tp": "0"}]
    # a run evaluated before the tables were compressed keeps its plain .csv, which is still read
    assert run.read_per_image(True) is None and run.per_image_file(True) is None
    legacy = run.per_image_path(True).with_suffix("")
    legacy.write_text("image_id,tp\np:0,1\n", encoding="utf-8")
    assert run.read_per_image(True) == [{"image_id": "p:0", "tp": "1"}] and run.per_image_file(True) == legacy
    # publishing such a run copies the table it has, not a name it lacks
    assert legacy in run.published_files() and path in run.published_files()


def test_a_table_that_is_not_gzip_is_one_clear_error(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    run.per_image_path(False).write_text("image_id,tp\np:0,1\n", encoding="utf-8")
    with pytest.raises(LungsegError, match=r"eval_crf_off_per_image\.csv\.gz: not a readable CSV table"):
        run.read_per_image(False)
    whole = gzip.compress(b"image_id,tp\n" + b"p:0,1\n" * 200)
    run.per_image_path(False).write_bytes(whole[:10] + b"\xff" * 10 + whole[20:])  # a damaged deflate stream
    with pytest.raises(LungsegError, match="not a readable CSV table"):
        run.read_per_image(False)
