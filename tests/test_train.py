"""Training: config, batching, run directory, resume after a real SIGKILL, and learning on CT patches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lungseg.config import LEGACY_VALUES, TrainConfig, upgrade_config
from lungseg.device import cpu_has_bf16
from lungseg.errors import LungsegError
from lungseg.training import resolve_image_size, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(make_npz, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_npz(tmp_path_factory.mktemp("data") / "toy.npz")


def test_config_json_round_trip_and_validation(tmp_path: Path) -> None:
    cfg = TrainConfig(data="x.npz", model="unet", loss="focal", image_size=64, split_fractions=(0.6, 0.2, 0.2))
    cfg.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == cfg
    with pytest.raises(LungsegError, match="image_size"):
        TrainConfig(image_size=50, depth=4).validate()
    with pytest.raises(LungsegError, match="model"):
        TrainConfig(model="resnet").validate()
    with pytest.raises(LungsegError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"modle": "unet"})
    with pytest.raises(LungsegError, match="precision"):
        TrainConfig(precision="fp8").validate()
    # configs written before the precision field existed still load, with the old behaviour
    d = cfg.to_dict()
    del d["precision"]
    assert TrainConfig.from_dict(d).precision == "auto"


def test_upgrade_config_is_every_migration_of_an_old_config() -> None:
    old = {"model": "unet", "num_workers": 4, "patch_size": 96}
    saved = upgrade_config(old)
    # an obsolete field is dropped; a field the run predates reads as what the run did; what it saved stays
    assert "num_workers" not in saved and saved["patch_size"] == 96 and saved["model"] == "unet"
    assert {k: saved[k] for k in LEGACY_VALUES if k != "patch_size"} == {k: v for k, v in LEGACY_VALUES.items()
                                                                      if k != "patch_size"}
    assert upgrade_config({"model": "unet"})["patch_size"] is None
    # a config someone writes keeps today's defaults for what it leaves out
    assert upgrade_config(old, saved_run=False) == {"model": "unet", "patch_size": 96}
    assert old == {"model": "unet", "num_workers": 4, "patch_size": 96}  # not modified
    assert TrainConfig.from_dict({"num_workers": 2}) == TrainConfig()
    assert TrainConfig.from_dict({}, saved_run=True).patch_size is None


def test_defaults_suit_small_ct_patches() -> None:
    d = TrainConfig()
    assert (d.model, d.loss, d.lr, d.batch_norm, d.tumour_fraction) == ("attention", "hybrid", 1e-3, True, None)
    assert 8 <= d.batch_size <= 32
    # Native size is kept when small (48 works with depth 4), capped at the paper's 256, and
    # rounded up to a multiple of 2**depth.
    assert resolve_image_size(d, [(48, 48)]) == 48
    assert resolve_image_size(d, [(512, 512)]) == 256
    assert resolve_image_size(d, [(50, 40)]) == 64
    assert resolve_image_size(TrainConfig(image_size=96), [(48, 48)]) == 96


def test_data_without_patient_ids_warns_that_the_split_is_by_image(tiny, tmp_path: Path) -> None:
    from lungseg.training import SplitByImageWarning

    rng = np.random.default_rng(0)
    images = rng.normal(-700, 50, (12, 16, 16)).astype(np.float32)
    masks = np.zeros((12, 16, 16), np.uint8)
    masks[:, 6:10, 6:10] = 1
    np.savez(tmp_path / "no_ids.npz", images=images, masks=masks)
    with pytest.warns(SplitByImageWarning, match="split is by image"):
        train(TrainConfig(data=str(tmp_path / "no_ids.npz"), epochs=1, **tiny), tmp_path / "run", progress=False)
    np.savez(tmp_path / "ids.npz", images=images, masks=masks, patient_ids=np.repeat([f"p{i}" for i in range(6)], 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitByImageWarning)
        train(TrainConfig(data=str(tmp_path / "ids.npz"), epochs=1, **tiny), tmp_path / "run2", progress=False)


def test_patch_training_runs_and_records_the_sampler(tiny, toy: Path, tmp_path: Path) -> None:
    res = train(TrainConfig(data=str(toy), epochs=1, image_size=32, patch_size=16, samples_per_epoch=32, **tiny),
                tmp_path / "run", progress=False)
    summary = json.loads((res.run_dir / "metrics.json").read_text())
    assert summary["sampler"]["mode"] == "patches" and summary["sampler"]["patch_size"] == 16
    assert summary["steps_per_epoch"] == 32 // tiny["batch_size"]


def test_test_fraction_zero_trains_on_all_but_validation(tiny, toy: Path, tmp_path: Path) -> None:
    res = train(TrainConfig(data=str(toy), epochs=1, split_fractions=(0.8, 0.2, 0.0), **tiny), tmp_path / "run",
                progress=False)
    split = json.loads((res.run_dir / "split.json").read_text())
    assert split["test"] == [] and len(split["train"]) == 8 and len(split["val"]) == 2


def test_run_directory(tiny, toy: Path, tmp_path: Path) -> None:
    from lungseg.data import open_dataset
    from lungseg.preprocess import Fingerprint

    out = tmp_path / "run"
    res = train(TrainConfig(data=str(toy), epochs=2, **tiny), out, progress=False)
    for name in ("config.json", "fingerprint.json", "split.json", "history.csv", "last.pt", "best.pt",
                 "metrics.json", "provenance.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp*")), "temporary checkpoint files left behind"
    cfg = TrainConfig.from_json(out / "config.json")
    assert cfg.image_size == 32 and cfg.epochs == 2
    split = json.loads((out / "split.json").read_text())
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # The fingerprint comes from the training patients only.
    ds = open_dataset(toy)
    fp = Fingerprint.from_json(out / "fingerprint.json")
    expected = Fingerprint.from_volumes([ds[p] for p in split["train"]], image_size=32)
    everyone = Fingerprint.from_volumes(list(ds), image_size=32)
    assert fp.mean == pytest.approx(expected.mean) and fp.std == pytest.approx(expected.std)
    assert fp.mean != pytest.approx(everyone.mean, abs=1e-9)
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "train_loss", "val_dice"] and len(rows) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and metrics["epochs_run"] == 2 == res.epochs_run
    assert metrics["precision"] == "fp32"  # "auto" on a CPU
    assert metrics["best_val_dice"] == pytest.approx(max(h["val_dice"] for h in res.history))
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["epoch"] == res.best_epoch
    # An existing run is never overwritten silently, and a resume must keep the configuration.
    with pytest.raises(LungsegError, match="--resume"):
        train(TrainConfig(data=str(toy), epochs=2, **tiny), out, progress=False)
    with pytest.raises(LungsegError, match="lr"):
        train(TrainConfig(data=str(toy), epochs=3, lr=0.1, **tiny), out, resume=True, progress=False)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 is refused")
def test_bf16_training_on_cpu(tiny, toy: Path, tmp_path: Path) -> None:
    runs = {p: train(TrainConfig(data=str(toy), epochs=1, precision=p, **tiny), tmp_path / p, progress=False)
            for p in ("fp32", "bf16")}
    assert json.loads((tmp_path / "bf16" / "metrics.json").read_text())["precision"] == "bf16"
    w = {p: torch.load(tmp_path / p / "last.pt", weights_only=False)["model"] for p in runs}
    # same seed and data: the weights differ only because the forward passes ran in bf16, and the
    # master weights stay fp32
    key = next(k for k, v in w["fp32"].items() if v.is_floating_point() and v.ndim == 4)
    assert w["bf16"][key].dtype == torch.float32
    assert not torch.equal(w["fp32"][key], w["bf16"][key])
    assert all(torch.isfinite(v).all() for v in w["bf16"].values() if v.is_floating_point())


def test_training_is_reproducible(tiny, toy: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(toy), epochs=1, **tiny)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_resume_after_sigkill_is_bit_exact
    try:
        train(cfg, tmp_path / "a", progress=False)
        train(cfg, tmp_path / "b", progress=False)
    finally:
        torch.set_num_threads(threads)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lungseg", "train", *args]


def test_resume_after_sigkill_is_bit_exact(make_npz, tmp_path: Path) -> None:
    """Kill a real training process after epoch k's checkpoint, resume, compare with an uninterrupted run."""
    data = make_npz(tmp_path / "d.npz", n_patients=10, per_patient=6, size=32, seed=1)
    flags = ["--data", str(data), "--epochs", "5", "--base-channels", "4", "--depth", "2", "--batch-size", "8",
             "--device", "cpu", "--augment", "on", "--seed", "5", "--quiet"]
    # One thread: MKL/oneDNN may pick fewer threads on a loaded machine, which changes the order of
    # floating-point reductions between two otherwise identical runs.
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cli(*flags, "--out", str(full)), check=True, cwd=ROOT, env=env, capture_output=True)

    proc = subprocess.Popen(_cli(*flags, "--out", str(killed)), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "last.pt").is_file():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    epoch_at_kill = torch.load(killed / "last.pt", weights_only=False)["epoch"]
    assert 1 <= epoch_at_kill < 5
    assert not (killed / "metrics.json").exists()

    done = subprocess.run(_cli(*flags, "--out", str(killed), "--resume"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a = torch.load(full / "last.pt", weights_only=False)
    b = torch.load(killed / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 5
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert (full / "history.csv").read_text().splitlines()[1:] != []
    assert [r.split(",")[:3] for r in (full / "history.csv").read_text().splitlines()] == \
        [r.split(",")[:3] for r in (killed / "history.csv").read_text().splitlines()]


def phantom_patches(path: Path, n_patients: int, size: int = 48, max_per_tumour_slice: int = 1, seed: int = 11) -> Path:
    """~48×48 HU patches around phantom tumours, one patient id per phantom patient."""
    from scipy import ndimage

    from lungseg.data.phantom import PhantomConfig, generate_patient

    cfg = PhantomConfig(image_size=160, n_slices=32)
    images, masks, pids, spacing = [], [], [], []
    rng = np.random.default_rng(seed)
    for i in range(n_patients):
        vol, _ = generate_patient((seed, i), cfg)
        for z in np.flatnonzero(vol.mask.reshape(vol.n_slices, -1).any(axis=1)):
            labels, n = ndimage.label(vol.mask[z])
            for k in range(1, n + 1):
                if (labels == k).sum() < 8:
                    continue
                cy, cx = ndimage.center_of_mass(labels == k)
                cy, cx = cy + rng.integers(-8, 9), cx + rng.integers(-8, 9)
                y0 = int(np.clip(round(cy) - size // 2, 0, vol.image.shape[1] - size))
                x0 = int(np.clip(round(cx) - size // 2, 0, vol.image.shape[2] - size))
                images.append(vol.image[z, y0 : y0 + size, x0 : x0 + size])
                masks.append(vol.mask[z, y0 : y0 + size, x0 : x0 + size])
                pids.append(vol.patient_id)
                spacing.append(vol.spacing[1:])
    np.savez(path, images=np.asarray(images, np.float32), masks=np.asarray(masks, np.uint8),
             patient_ids=np.asarray(pids), spacing=np.asarray(spacing))
    return path


@pytest.mark.slow
def test_attention_model_learns_ct_patches_with_defaults(tmp_path: Path) -> None:
    """The user's scenario: ~130 48×48 HU tumour patches, default attention model, about a minute of CPU.

    Held-out patients' patches must reach a Dice well above chance; a broken pipeline (wrong
    normalisation, labels, learning rate, loss sign) stays far below the threshold.
    """
    from lungseg.evaluation import evaluate_run

    data = phantom_patches(tmp_path / "patches.npz", n_patients=24)
    n = len(np.load(data)["images"])
    assert n >= 80
    started = time.time()
    # 2 epochs of the default 512 samples: about as many as 8 passes over the ~100 training patches
    res = train(TrainConfig(data=str(data), epochs=2, device="cpu", split_fractions=(0.7, 0.15, 0.15)), tmp_path / "run",
                progress=False)
    train_s = time.time() - started
    m = evaluate_run(tmp_path / "run", data, out=tmp_path / "m.json", n_boot=0, robustness=False, progress=False)
    print(f"\n{n} patches, training {train_s:.0f} s, best val Dice {res.best_val_dice:.3f},"
          f" test Dice pooled {m['pooled']['dice']:.3f} per-image {m['per_image']['dice']:.3f}")
    assert m["split"] == "test" and m["n_patients"] >= 2
    assert m["pooled"]["dice"] > 0.5



def _no_ids_npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    images = rng.normal(-700, 50, (12, 16, 16)).astype(np.float32)
    masks = np.zeros((12, 16, 16), np.uint8)
    masks[:, 6:10, 6:10] = 1
    np.savez(path, images=images, masks=masks)
    return path


def test_resume_refuses_other_data_whose_generated_ids_collide(tiny, tmp_path: Path) -> None:
    """`train --resume --out R --data OTHER` must not continue R on another dataset."""
    from lungseg.errors import DataError

    first, other = _no_ids_npz(tmp_path / "a.npz", 0), _no_ids_npz(tmp_path / "b.npz", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(TrainConfig(data=str(first), epochs=1, **tiny), tmp_path / "run", progress=False)
        with pytest.raises(DataError, match="not the data .* was trained on"):
            train(TrainConfig(data=str(other), epochs=1, **tiny), tmp_path / "run", resume=True, progress=False)
        # the same data under another path is the same data
        copy = tmp_path / "copy.npz"
        copy.write_bytes(first.read_bytes())
        res = train(TrainConfig(data=str(copy), epochs=1, **tiny), tmp_path / "run", resume=True, progress=False)
    assert res.epochs_run == 1
    assert set(json.loads((tmp_path / "run" / "split.json").read_text())["content_sha256"]) == {
        f"slice_{i:05d}" for i in range(12)}


def test_a_batch_larger_than_an_epoch_is_refused(tiny, toy: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(toy), epochs=1, **{**tiny, "batch_size": 64}, samples_per_epoch=32)
    with pytest.raises(LungsegError, match="larger than the 32 samples of an epoch"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_sizes_beyond_the_limits_are_refused_by_the_config() -> None:
    from lungseg.limits import MAX_BATCH_SIZE, MAX_DEPTH, MAX_IMAGE_SIZE

    for field, value in (("depth", 10**23), ("batch_size", MAX_BATCH_SIZE + 1), ("image_size", 2**40),
                         ("patch_size", 2 * MAX_IMAGE_SIZE)):
        with pytest.raises(LungsegError, match=f"{field} must be at most"):
            TrainConfig(**{field: value}).validate()
    TrainConfig(depth=MAX_DEPTH, image_size=2**MAX_DEPTH, patch_size=None).validate()
