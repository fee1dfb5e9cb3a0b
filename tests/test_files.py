"""Nothing lost (issue 24): atomic outputs, an output guard that compares files, locked run folders.

Each regression test below failed on the code before issue 24: derived names (``--prob``,
``--attention``) that are the input, a hard link to the input, ``predict --out`` into the model,
``train --out`` into a folder that is not a run, ``--cache-dir`` inside the data, two trainings in
one run folder. The property test drives every verb's outputs onto its inputs; the kill tests stop
``predict`` and ``train`` at random points and load every file left under its final name.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lungseg.cli import main
from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.files import atomic_file, atomic_write_bytes, check_output, temporary_path
from lungseg.rundir import RunDir, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _lungseg(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lungseg", *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          **kwargs)


def _cli(*args: str) -> tuple[int, str]:
    """``lungseg ARGS`` in this process: ``(exit status, stderr)``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in args])
    return rc, err.getvalue()


def _snapshot(*paths: Path) -> dict[Path, bytes]:
    """The bytes of every file at or under ``paths`` (a run folder's lock file aside: it is no content)."""
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*")))]
    return {p: p.read_bytes() for p in files if p.is_file() and p.name != RunDir.LOCK}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, make_npz: Callable[..., Path], tiny: dict[str, Any]) -> dict[str, Path]:
    """A tiny attention run on HU data, a tiny U-Net run on unit (PNG) intensities, the HU model as a .zip,
    a NIfTI scan and a PNG image."""
    from PIL import Image

    from lungseg.data.nifti import write_nifti
    from lungseg.inference.bundle import export_model
    from lungseg.training import train

    root = tmp_path_factory.mktemp("files")
    hu = make_npz(root / "hu.npz", n_patients=6, per_patient=2, size=16, seed=2)
    train(TrainConfig(data=str(hu), model="attention", epochs=1, **tiny), root / "hu_run", progress=False)
    z = np.load(hu)
    np.savez(root / "unit.npz", images=((z["images"] + 1000) / 1400).clip(0, 1).astype(np.float32), masks=z["masks"],
             patient_ids=z["patient_ids"], intensity="unit")
    train(TrainConfig(data=str(root / "unit.npz"), model="unet", epochs=1, **tiny), root / "unit_run", progress=False)
    export_model(root / "hu_run", root / "model.zip")
    write_nifti(z["images"][:4], root / "scan.nii.gz", spacing=(2.0, 0.8, 0.8))
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(root / "image.png")
    return {"hu": root / "hu_run", "unit": root / "unit_run", "zip": root / "model.zip", "npz": hu,
            "nifti": root / "scan.nii.gz", "png": root / "image.png"}


# --------------------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = atomic_write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"old" and not temporary_path(target).exists()


def test_a_killed_writer_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    """SIGKILL in the middle of :func:`atomic_file`: the name holds the old file or nothing, never a half."""
    code = ("import os, signal, sys; from lungseg.files import atomic_file\n"
            "with atomic_file(sys.argv[1]) as fh:\n"
            "    fh.write(b'x' * 1000); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    for name, old in (("new.nii.gz", None), ("old.nii.gz", b"complete")):
        target = tmp_path / name
        if old is not None:
            target.write_bytes(old)
        done = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == -signal.SIGKILL
        assert (target.read_bytes() == old) if old is not None else not target.exists()


def test_written_nifti_png_and_npz_go_through_a_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every writer of a prediction renames a complete temporary file onto its name (``os.replace``)."""
    from lungseg.data.nifti import read_nifti, write_nifti
    from lungseg.inference.predictor import Segmentation
    from lungseg.inference.writers import write_image, write_npz

    replaced: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(Path(b).name), real_replace(a, b))[1])
    vol = np.random.default_rng(1).random((3, 8, 8)).astype(np.float32)
    write_nifti(vol, tmp_path / "v.nii.gz", spacing=(1.0, 1.0, 1.0))
    seg = Segmentation(np.ones((1, 8, 8), np.uint8), vol[:1], [vol[:1]])
    write_image(seg, tmp_path / "m.png", f"{tmp_path}/m_", probabilities=True)
    write_npz(seg, tmp_path / "p.npz", probabilities=True)
    assert replaced == ["v.nii.gz", "m.png", "m_probability.png", "m_attention_level0.png", "p.npz"]
    np.testing.assert_array_equal(read_nifti(tmp_path / "v.nii.gz")[0], vol)


# --------------------------------------------------------------------------- the guard compares files
def test_check_output_refuses_a_hard_link_to_an_input(tmp_path: Path) -> None:
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"scan")
    os.link(scan, tmp_path / "link.nii.gz")
    with pytest.raises(LungsegError, match="is the input"):
        check_output(tmp_path / "link.nii.gz", [scan])
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(LungsegError, match="inside the input"):
        check_output(tmp_path / "data" / "x.json", [tmp_path / "alias"])
    check_output(tmp_path / "other.nii.gz", [scan])  # a new name is fine


@pytest.mark.parametrize("source, out, flags", [
    ("nifti", "scan_probability.nii.gz", ["--prob"]),
    ("nifti", "scan_attention_level1.nii.gz", ["--attention"]),
    ("png", "image_probability.png", ["--prob"]),
])
def test_predict_never_writes_a_derived_name_onto_the_input(runs: dict[str, Path], tmp_path: Path, source: str, out: str,
                                                            flags: list[str]) -> None:
    """``--out scan.nii.gz --prob`` writes ``scan_probability.nii.gz``: when that is the input, refuse."""
    inp = tmp_path / out
    shutil.copy(runs[source], inp)
    suffix = ".png" if source == "png" else ".nii.gz"
    model = runs["unit"] if source == "png" else runs["hu"]
    before = inp.read_bytes()
    rc, err = _cli("predict", inp, "--run", model, "--out", tmp_path / f"{out.split('_')[0]}{suffix}", "--quiet", *flags)
    assert rc == 2 and "is the input" in err and err.count("\n") == 1, err
    assert inp.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [out]  # refused before anything was written


def test_predict_refuses_a_hard_link_to_its_input(runs: dict[str, Path], tmp_path: Path) -> None:
    inp = tmp_path / "scan.nii.gz"
    shutil.copy(runs["nifti"], inp)
    os.link(inp, tmp_path / "mask.nii.gz")
    before = inp.read_bytes()
    rc, err = _cli("predict", inp, "--run", runs["hu"], "--out", tmp_path / "mask.nii.gz", "--quiet")
    assert rc == 2 and "is the input" in err, err
    assert inp.read_bytes() == before


def test_predict_never_writes_into_the_model(runs: dict[str, Path], tmp_path: Path) -> None:
    """Neither the run folder nor the model .zip is an output (nor a folder for one)."""
    run = tmp_path / "run"
    shutil.copytree(runs["hu"], run)
    model = tmp_path / "model.zip"
    shutil.copy(runs["zip"], model)
    before = _snapshot(run, model)
    for source, out in ((run, run / "mask.nii.gz"), (run, run), (model, model), (model, model / "mask.nii.gz")):
        rc, err = _cli("predict", runs["nifti"], "--model", source, "--out", out, "--quiet", "--prob")
        assert rc == 2 and "the input" in err, (out, err)
    assert _snapshot(run, model) == before


# --------------------------------------------------------------------------- train: run folders
def test_train_refuses_a_folder_that_holds_no_run(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mine"  # someone's results, with names a run also writes
    folder.mkdir()
    for name, text in (("metrics.json", '{"mine": 1}'), ("history.csv", "a,b\n")):
        (folder / name).write_text(text)
    before = _snapshot(folder)
    rc, err = _cli("train", "--data", runs["npz"], "--out", folder, "--epochs", "1", "--quiet")
    assert rc == 2 and "no lungseg run" in err, err
    assert _snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == ["history.csv", "metrics.json"]


def test_train_refuses_a_run_of_another_configuration(runs: dict[str, Path], tmp_path: Path, tiny: dict[str, Any]) -> None:
    """A run killed before its first checkpoint holds only its configuration: a fresh start must be the same one."""
    run = RunDir(tmp_path / "run").create()
    run.write_config(TrainConfig(data=str(runs["npz"]), epochs=1, **tiny))
    before = run.config_path.read_bytes()
    rc, err = _cli("train", "--data", runs["npz"], "--out", run.path, "--epochs", "1", "--lr", "0.5", "--quiet")
    assert rc == 2 and "another configuration" in err and "lr" in err, err
    assert run.config_path.read_bytes() == before


def test_cache_dir_inside_the_data_is_refused(tmp_path: Path) -> None:
    from lungseg.data.phantom import PhantomConfig, generate_study

    study = generate_study(tmp_path / "study", 2, seed=0, config=PhantomConfig(image_size=32, n_slices=4), progress=False)
    before = _snapshot(study)
    rc, err = _cli("train", "--data", study, "--out", tmp_path / "run", "--cache-dir", study / "cache", "--epochs", "1",
                   "--quiet")
    assert rc == 2 and "--cache-dir" in err and "inside the input" in err, err
    assert _snapshot(study) == before and not (study / "cache").exists()


def test_a_second_training_in_one_run_folder_is_refused(runs: dict[str, Path], tmp_path: Path, tiny: dict[str, Any]) -> None:
    """While one ``train`` runs in a folder, a second one there (even ``--resume``) gets one clear line."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "lungseg", "train", "--data", str(runs["npz"]), "--out", str(out), "--epochs", "10000",
            "--quiet", "--resume", *(f"--{k.replace('_', '-')}={v}" for k, v in tiny.items())]
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not RunDir(out).config_path.is_file():  # the first one is training
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 2 and "another process" in second.stderr, second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert first.poll() is None  # untouched by the refused one
    finally:
        first.kill()
        first.wait()
    with RunDir(out).lock():  # the kernel released the killed process's lock
        pass


# --------------------------------------------------------------------------- property: every verb, every collision
def _collisions(runs: dict[str, Path], work: Path) -> dict[str, Callable[[str], tuple[list[Any], list[Path]]]]:
    """Per verb, a builder of ``(argv, inputs)`` whose output collides with an input in the given way."""
    data, scan, png, run, model = work / "d.npz", work / "scan.nii.gz", work / "image.png", work / "run", work / "model.zip"

    def alias(target: Path, how: str, name: str) -> Path:
        """``target`` itself, a hard link or a symbolic link to it named ``name``."""
        if how == "same":
            return target
        link = work / name
        os.link(target, link) if how == "hardlink" else link.symlink_to(target)
        return link

    def predict(how: str) -> tuple[list[Any], list[Path]]:
        if how == "derived":
            inp = work / "s_probability.nii.gz"
            shutil.copy(scan, inp)
            return ["predict", inp, "--run", run, "--out", work / "s.nii.gz", "--prob"], [inp, run]
        return ["predict", scan, "--run", run, "--out", alias(scan, how, "o.nii.gz")], [scan, run]

    def predict_png(how: str) -> tuple[list[Any], list[Path]]:
        if how == "derived":
            inp = work / "i_probability.png"
            shutil.copy(png, inp)
            return ["predict", inp, "--run", work / "unit", "--out", work / "i.png", "--prob"], [inp, work / "unit"]
        return ["predict", png, "--run", work / "unit", "--out", alias(png, how, "o.png")], [png, work / "unit"]

    def predict_model(how: str) -> tuple[list[Any], list[Path]]:
        out = run / "mask.nii.gz" if how == "derived" else alias(model, how, "o.zip") / "mask.nii.gz"
        return ["predict", scan, "--model", model if how != "derived" else run, "--out", out, "--prob"], [scan, run, model]

    def evaluate(how: str) -> tuple[list[Any], list[Path]]:
        out = alias(run / "config.json", how, "o.json") if how != "derived" else run / "best.pt"
        return ["evaluate", "--run", run, "--data", data, "--out", out], [data, run]

    def train(how: str) -> tuple[list[Any], list[Path]]:
        out = work if how == "derived" else alias(data, how, "o")  # the data's own folder holds no run
        return ["train", "--data", data, "--out", out, "--epochs", "1"], [data]

    def export(how: str) -> tuple[list[Any], list[Path]]:
        out = run / "m.zip" if how in ("same", "derived") else alias(run / "best.pt", how, "o.zip")
        return ["export", run, out, "--force"], [run]

    def grid(verb: str) -> Callable[[str], tuple[list[Any], list[Path]]]:
        return lambda how: ([verb, "--data", data, "--out", alias(data, how, "o") if how != "derived" else data / "x"],
                            [data])

    return {"predict": predict, "predict_png": predict_png, "predict_model": predict_model, "evaluate": evaluate,
            "train": train, "export": export, "experiment": grid("experiment"), "tune": grid("tune")}


VERBS = ("predict", "predict_png", "predict_model", "evaluate", "train", "export", "experiment", "tune")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verb=st.sampled_from(VERBS), how=st.sampled_from(("same", "hardlink", "symlink", "derived")))
def test_no_verb_writes_onto_its_inputs(runs: dict[str, Path], verb: str, how: str) -> None:
    """Whatever the verb and however its output names an input (the input, a hard link, a symbolic
    link, a derived name, inside it), the verb refuses with one line and every input is byte-identical."""
    if verb == "export" and how == "hardlink":
        # a hard link to a file *inside* the run folder is not recognised (folders are not walked), but the
        # export replaces the link's name (atomic_file) and never writes into best.pt: it stays identical
        how = "symlink"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(runs["hu"], work / "run")
        shutil.copytree(runs["unit"], work / "unit")
        for name in ("zip", "npz", "nifti", "png"):
            shutil.copy(runs[name], work / {"zip": "model.zip", "npz": "d.npz", "nifti": "scan.nii.gz",
                                            "png": "image.png"}[name])
        argv, inputs = _collisions(runs, work)[verb](how)
        before = _snapshot(*inputs)
        rc, err = _cli(*argv, "--quiet") if verb != "export" else _cli(*argv)
        assert rc == 2 and err.startswith("error:") and err.count("\n") == 1, (argv, err)
        assert _snapshot(*inputs) == before, argv


# --------------------------------------------------------------------------- kills
def _loads(path: Path) -> None:
    """Read ``path`` as its kind of file, fully (raises on a truncated or corrupt file)."""
    name = path.name
    if name.endswith((".nii", ".nii.gz")):
        np.asarray(nib.load(path).dataobj).sum()
    elif name.endswith(".json"):
        json.loads(path.read_text())
    elif name.endswith(".csv"):
        list(csv.DictReader(path.open()))
    elif name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            [z[k].sum() for k in z.files]
    elif name.endswith(".pt"):
        read_checkpoint(path, path)
    elif name.endswith(".png"):
        from PIL import Image

        Image.open(path).load()


def _visible(out: Path) -> list[Path]:
    """The files under ``out`` with a final name (not a hidden temporary file)."""
    return [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")] if out.exists() else []


def _kill_at_random(argv: Callable[[Path], list[str]], work: Path, tries: int, seed: int) -> list[Path]:
    """Run ``lungseg ARGV(out)`` once to time it, then ``tries`` times into a new ``out``, SIGKILLed at a
    random moment: half the tries at a uniform moment of the run, half just after a random one of its
    files first appears under its name (when an in-place writer would be mid-file). Every file left
    under its final name must load. Returns the files checked."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    done = _lungseg(*argv(work / "timed"))
    assert done.returncode == 0, done.stderr
    whole, n_files = time.perf_counter() - start, len(_visible(work / "timed"))
    checked: list[Path] = []
    for k in range(tries):
        out = work / f"killed{k}"
        proc = subprocess.Popen([sys.executable, "-m", "lungseg", *argv(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if k % 2:
            nth = int(rng.integers(1, n_files + 1))
            while len(_visible(out)) < nth and proc.poll() is None:
                time.sleep(0.001)
            time.sleep(float(rng.uniform(0, 0.01)))
        else:
            time.sleep(float(rng.uniform(0.2, 1.0)) * whole)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for p in _visible(out):
            _loads(p)
            checked.append(p)
    return checked


@pytest.mark.slow
def test_killing_predict_never_leaves_a_corrupt_file(runs: dict[str, Path], tmp_path: Path) -> None:
    from lungseg.data.nifti import write_nifti

    write_nifti(np.full((60, 64, 64), -800, np.float32), tmp_path / "big.nii.gz", spacing=(2.0, 0.8, 0.8))
    _kill_at_random(lambda out: ["predict", str(tmp_path / "big.nii.gz"), "--run", str(runs["hu"]), "--out", str(out),
                                 "--prob", "--attention", "--quiet", "--device", "cpu"], tmp_path, tries=4, seed=0)


@pytest.mark.slow
def test_killing_train_never_leaves_a_corrupt_file(runs: dict[str, Path], tmp_path: Path, tiny: dict[str, Any]) -> None:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in tiny.items()]

    def argv(out: Path) -> list[str]:
        return ["train", "--data", str(runs["npz"]), "--out", str(out), "--epochs", "4", "--quiet", "--resume", *flags]

    _kill_at_random(argv, tmp_path, tries=4, seed=1)
    for k in range(4):  # and every killed run resumes to the end
        done = _lungseg(*argv(tmp_path / f"killed{k}"))
        assert done.returncode == 0 and RunDir(tmp_path / f"killed{k}").is_finished(), done.stderr


@pytest.mark.slow
def test_two_predictions_to_one_output_leave_one_complete_mask(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mask.nii.gz"
    argv = [sys.executable, "-m", "lungseg", "predict", str(runs["nifti"]), "--run", str(runs["hu"]), "--out", str(out),
            "--quiet", "--device", "cpu"]
    for _ in range(3):  # two thresholds: two different files race for one name
        procs = [subprocess.Popen([*argv, "--threshold", t], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for t in ("0.3", "0.7")]
        assert all(p.wait() == 0 for p in procs)
        _loads(out)


def test_the_readme_promises_name_tests_that_exist() -> None:
    """Each ``tests/<file>.py::<test>`` (or ``::<test>`` of the file named before it) in README's promise
    table is a test function of that file."""
    import re

    table = (ROOT / "README.md").read_text(encoding="utf-8").split("## Reliability", 1)[1].split("\n## ", 1)[0]
    named = 0
    for row in table.splitlines()[2:]:
        file = None
        for ref_file, name in re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`", row):
            file = ref_file or file
            assert file and f"def {name}(" in (ROOT / file).read_text(encoding="utf-8"), (file, name)
            named += 1
    assert named
