"""`lungseg export RUN model.zip` and `predict --model model.zip`: the round trip gives the run's
predictions, and a zip that is not a lungseg export, or is unsafe, is refused before anything loads."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lungseg.cli import main
from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.inference import Predictor
from lungseg.inference.bundle import BUNDLE_FORMAT, export_model, read_bundle, read_metadata
from lungseg.training import train


@pytest.fixture(scope="module")
def run(tiny, make_npz, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundle")
    data = make_npz(root / "hu.npz", n_patients=6, per_patient=3, size=32, seed=5)
    train(TrainConfig(data=str(data), model="attention", epochs=1, **tiny), root / "run", progress=False)
    return {"root": root, "run": root / "run", "data": data}


@pytest.fixture(scope="module")
def exported(run: dict[str, Path]) -> Path:
    return export_model(run["run"], run["root"] / "model.zip")


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the zip ``src`` with members replaced (bytes), removed (None) or added."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in change:
                continue
            zout.writestr(info, zin.read(info.filename))
        for name, data in change.items():
            if data is not None:
                zout.writestr(name, data)
    return dst


def test_round_trip_gives_the_same_predictions(run: dict[str, Path], exported: Path) -> None:
    images = np.load(run["data"])["images"][:5].astype(np.float32)
    direct = Predictor.from_run_dir(run["run"], device="cpu", precision="fp32")
    loaded = Predictor.from_bundle(exported, device="cpu", precision="fp32")
    assert loaded.config == direct.config and loaded.epoch == direct.epoch
    assert loaded.run_dir == exported.resolve()
    for (name, a), (_, b) in zip(direct.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(loaded.probabilities(images), direct.probabilities(images))
    # Predictor.load (hence predict) takes the zip in place of a run directory
    via_load = Predictor.load(exported, device="cpu", precision="fp32")
    np.testing.assert_array_equal(via_load.probabilities(images), direct.probabilities(images))


def test_bundle_unpacks_in_memory_and_never_imports_the_predictor(exported: Path, tmp_path: Path) -> None:
    """bundle.py only unpacks and verifies: no temporary run directory, no call back into the loader."""
    import ast
    import tempfile

    import lungseg.inference.bundle as bundle

    before = set(Path(tempfile.gettempdir()).iterdir())
    unpacked = read_bundle(exported)
    assert set(Path(tempfile.gettempdir()).iterdir()) == before
    assert unpacked.config.model == "attention" and "model" in unpacked.state and unpacked.path == exported
    tree = ast.parse(Path(bundle.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith("lungseg.inference")}, imported


def test_metadata_and_model_card(exported: Path) -> None:
    meta = read_metadata(exported)
    assert meta["format"] == BUNDLE_FORMAT and meta["format_version"] == 1
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    with zipfile.ZipFile(exported) as zf:
        names = set(zf.namelist())
        card = zf.read("docs/README.md").decode()
    assert {"configs/metadata.json", "docs/README.md"} <= names
    assert set(meta["files"]) == names - {"configs/metadata.json"}
    assert "not a medical device" in card and "lungseg predict" in card


def test_cli_export_and_predict_with_model(run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.zip"
    assert main(["export", str(run["run"]), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["export", str(run["run"]), str(out)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    z = np.load(run["data"])
    npz = tmp_path / "in.npz"
    np.savez(npz, images=z["images"][:4])
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["predict", str(npz), "--model", str(out), "--out", str(a), "--device", "cpu", "--quiet"]) == 0
    assert main(["predict", str(npz), "--run", str(run["run"]), "--out", str(b), "--device", "cpu", "--quiet"]) == 0
    with np.load(a) as pa, np.load(b) as pb:
        assert set(pa.files) == set(pb.files)
        for key in pa.files:
            np.testing.assert_array_equal(pa[key], pb[key])


def test_export_refuses_a_non_zip_name_and_writing_into_the_run(run: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(LungsegError, match="must be a .zip"):
        export_model(run["run"], tmp_path / "model.tar")
    with pytest.raises(LungsegError, match="inside the input"):
        export_model(run["run"], run["run"] / "model.zip")
    with pytest.raises(FileNotFoundError):
        export_model(tmp_path / "no-run", tmp_path / "x.zip")


def test_a_zip_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "other.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("configs/metadata.json", json.dumps({"format": "monai-bundle"}))
    with pytest.raises(LungsegError, match="not a lungseg export"):
        Predictor.from_bundle(plain)
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(LungsegError, match="not a lungseg export"):
        Predictor.load(empty)
    text = tmp_path / "model.zip.txt"
    text.write_text("hello")
    with pytest.raises(LungsegError, match="not a zip"):
        read_metadata(text)


@pytest.mark.parametrize("name", ["../evil.pt", "/etc/passwd", "configs/../../x", "models\\best.pt", "C:/x", "extra.txt"])
def test_unsafe_or_unexpected_member_names_are_refused(exported: Path, tmp_path: Path, name: str) -> None:
    bad = _rewrite(exported, tmp_path / "bad.zip", {name: b"x"})
    with pytest.raises(LungsegError, match="unsafe member name|unexpected member"):
        Predictor.from_bundle(bad)


def test_altered_or_missing_weights_are_refused(exported: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(exported) as zf:
        weights = next(n for n in zf.namelist() if n.startswith("models/"))
    altered = _rewrite(exported, tmp_path / "altered.zip", {weights: b"not the weights"})
    with pytest.raises(LungsegError, match="SHA-256"):
        Predictor.from_bundle(altered)
    missing = _rewrite(exported, tmp_path / "missing.zip", {weights: None})
    with pytest.raises(LungsegError, match="not a complete lungseg export"):
        Predictor.from_bundle(missing)


def test_weights_that_would_run_code_are_refused(exported: Path, tmp_path: Path) -> None:
    # a pickle naming an arbitrary callable, with a matching SHA-256: the weights_only reader refuses it
    import hashlib
    import io

    class Evil:
        def __reduce__(self):  # noqa: D105
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"model": {"w": Evil()}}, buf)
    with zipfile.ZipFile(exported) as zf:
        weights = next(n for n in zf.namelist() if n.startswith("models/"))
        meta = json.loads(zf.read("configs/metadata.json"))
    meta["files"][weights] = hashlib.sha256(buf.getvalue()).hexdigest()
    evil = _rewrite(exported, tmp_path / "evil.zip", {weights: buf.getvalue(), "configs/metadata.json": json.dumps(meta).encode()})
    with pytest.raises(LungsegError, match="weights_only"):
        Predictor.from_bundle(evil)


def _weights_member(exported: Path) -> tuple[str, dict]:
    with zipfile.ZipFile(exported) as zf:
        return next(n for n in zf.namelist() if n.startswith("models/")), json.loads(zf.read("configs/metadata.json"))


def test_nan_weights_are_refused(exported: Path, tmp_path: Path) -> None:
    import hashlib
    import io

    weights, meta = _weights_member(exported)
    with zipfile.ZipFile(exported) as zf:
        state = torch.load(io.BytesIO(zf.read(weights)), weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    buf = io.BytesIO()
    torch.save(state, buf)
    meta["files"][weights] = hashlib.sha256(buf.getvalue()).hexdigest()
    nan = _rewrite(exported, tmp_path / "nan.zip", {weights: buf.getvalue(), "configs/metadata.json": json.dumps(meta).encode()})
    with pytest.raises(LungsegError, match=rf"nan.zip: 1 weight tensor\(s\) hold NaN or infinite values"):
        Predictor.from_bundle(nan)


def test_a_bad_crc_is_one_error_naming_the_file(exported: Path, tmp_path: Path) -> None:
    weights, _ = _weights_member(exported)
    raw = bytearray(exported.read_bytes())
    with zipfile.ZipFile(exported) as zf:
        info = zf.getinfo(weights)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    raw[start] ^= 0xFF
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(LungsegError, match="damaged.zip: damaged model archive"):
        Predictor.load(damaged)


def test_a_truncated_archive_is_not_a_missing_run_directory(exported: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    with pytest.raises(LungsegError, match="truncated.zip: not a zip file \\(or a truncated one\\)"):
        Predictor.load(truncated)
    assert main(["predict", str(truncated), "--model", str(truncated), "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "run directory not found" not in err and "truncated" in err


def test_member_sizes_are_read_from_the_zip_directory_before_unpacking(exported: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A metadata member of a gigabyte is refused from its declared size (the bound made small here)."""
    from lungseg.inference import bundle

    monkeypatch.setattr(bundle, "MAX_ARCHIVE_METADATA_BYTES", 64, raising=False)
    with pytest.raises(LungsegError, match="configs/metadata.json' unpacks to .* bytes, over the 64 bytes"):
        read_metadata(exported)
