"""`lungseg export RUN model.zip` and `predict --model model.zip`: the round trip gives the run's
predictions, the zip is a MONAI bundle that `monai.bundle` loads to the same outputs, exports of the
old layout still load, and a zip that is not a lungseg export, or is unsafe, is refused before
anything loads."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lungseg.cli import main
from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.inference import Predictor
from lungseg.inference.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, export_model, read_bundle, read_metadata
from lungseg.preprocess import preprocess_slices
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


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member(archive: Path, suffix: str) -> str:
    """The zip member of ``archive`` whose name ends with ``suffix`` (the bundle's folder in front)."""
    with zipfile.ZipFile(archive) as zf:
        return next(n for n in zf.namelist() if n.endswith(suffix))


def _layout1_archive(run_dir: Path, dst: Path) -> Path:
    """An export as lungseg 0.1 wrote it (layout 1): members at the zip's root, the weights as a
    ``{"model", "epoch"}`` checkpoint named like the run's, every member's SHA-256 in the metadata."""
    ckpt = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    weights = io.BytesIO()
    torch.save({"model": ckpt["model"], "epoch": int(ckpt["epoch"])}, weights)
    payload = {"configs/config.json": (run_dir / "config.json").read_bytes(),
               "configs/fingerprint.json": (run_dir / "fingerprint.json").read_bytes(),
               "models/best.pt": weights.getvalue(), "docs/README.md": b"# an old export\n"}
    meta = {"format": BUNDLE_FORMAT, "format_version": 1, "name": "old", "epoch": int(ckpt["epoch"]),
            "files": {name: _sha(data) for name, data in payload.items()}}
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("configs/metadata.json", json.dumps(meta))
        for name, data in payload.items():
            zf.writestr(name, data)
    return dst


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
    assert meta["format"] == BUNDLE_FORMAT and meta["format_version"] == BUNDLE_FORMAT_VERSION == 2
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    with zipfile.ZipFile(exported) as zf:
        names = set(zf.namelist())
        card = zf.read("model/docs/README.md").decode()
    assert {f"model/{m}" for m in meta["files"]} == names - {"model/configs/metadata.json"}
    assert "not a medical device" in card and "lungseg predict" in card and "monai.bundle.load" in card


def test_export_is_a_monai_bundle_in_one_folder_named_after_the_file(run: dict[str, Path], tmp_path: Path) -> None:
    """MONAI's archive format: ``NAME.zip`` holds ``NAME/configs/metadata.json``, ``NAME/models/model.pt``, ..."""
    out = export_model(run["run"], tmp_path / "lung_ct_segmentation.v2.zip")
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        meta = json.loads(zf.read("lung_ct_segmentation/configs/metadata.json"))
    assert names == {f"lung_ct_segmentation/{m}" for m in (
        "configs/metadata.json", "configs/inference.json", "configs/config.json", "configs/fingerprint.json",
        "models/model.pt", "models/model.safetensors", "docs/README.md")}
    mandatory = {"version", "monai_version", "pytorch_version", "numpy_version", "optional_packages_version", "task",
                 "description", "authors", "copyright", "network_data_format"}  # MONAI's metadata.json, required keys
    assert mandatory <= set(meta), mandatory - set(meta)
    for spec in (*meta["network_data_format"]["inputs"].values(), *meta["network_data_format"]["outputs"].values()):
        assert {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                "channel_def"} <= set(spec)
    with pytest.raises(LungsegError, match="must not start with a dot"):
        export_model(run["run"], tmp_path / ".hidden.zip")


def test_monai_bundle_loads_the_network_and_gives_the_predictors_output(run: dict[str, Path], exported: Path,
                                                                         tmp_path: Path) -> None:
    """Unzipped, the export is read by ``monai.bundle``: ``load`` builds the network from
    ``configs/inference.json`` with ``models/model.pt``, and its ``preprocessing`` -> network ->
    ``postprocessing`` gives lungseg's Predictor's probabilities and mask on the same slices."""
    from monai.bundle import ConfigParser
    from monai.bundle import load as monai_load

    bundles = tmp_path / "bundles"
    with zipfile.ZipFile(exported) as zf:
        zf.extractall(bundles)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns that a config's _target_ entries run code: this one is ours
        net = monai_load("model", bundle_dir=bundles, workflow_type="inference", device="cpu").eval()
        parser = ConfigParser()
        parser.read_config(str(bundles / "model" / "configs" / "inference.json"))
        parser.read_meta(str(bundles / "model" / "configs" / "metadata.json"))
        pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    # the bundle's inference.json runs the network once: compared with the predictor without its test-time flips
    predictor = Predictor.from_bundle(exported, device="cpu", precision="fp32", tta="none")
    for (name, a), (_, b) in zip(predictor.model.state_dict().items(), net.state_dict().items()):
        assert torch.equal(a, b), name
    images = np.load(run["data"])["images"][:5].astype(np.float32)
    with torch.no_grad():
        x = torch.stack([torch.as_tensor(pre(img[None])) for img in images])
        logits = net(x)
    probs = predictor.probabilities(images)
    np.testing.assert_allclose(torch.sigmoid(logits)[:, 0].numpy(), probs, rtol=0, atol=1e-6)
    masks = np.stack([np.asarray(post(t))[0] for t in logits])
    np.testing.assert_array_equal(masks.astype(np.uint8), predictor.mask(probs))
    # slices of another size: MONAI's Resize is the bilinear resize of lungseg's preprocessing
    other = torch.nn.functional.interpolate(torch.from_numpy(images)[:, None], size=(48, 40), mode="bilinear")[:, 0]
    monai_in = np.stack([np.asarray(pre(img[None]))[0] for img in other.numpy()])
    np.testing.assert_allclose(monai_in, preprocess_slices(other.numpy(), predictor.fingerprint), rtol=0, atol=1e-5)


def test_weights_are_safetensors_and_model_pt_is_a_plain_state_dict(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lungseg reads the safetensors member (no unpickling at all); model.pt holds the same tensors."""
    from safetensors.torch import load as load_safetensors

    with zipfile.ZipFile(exported) as zf:
        from_safetensors = load_safetensors(zf.read("model/models/model.safetensors"))
        from_pt = torch.load(io.BytesIO(zf.read("model/models/model.pt")), weights_only=True)
    assert from_safetensors.keys() == from_pt.keys()
    assert all(torch.equal(from_safetensors[k], from_pt[k]) for k in from_pt)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("read_bundle unpickled something")

    monkeypatch.setattr(torch, "load", no_unpickling)
    state = read_bundle(exported).state
    assert state["model"].keys() == from_pt.keys() and state["epoch"] == read_metadata(exported)["epoch"]


def test_exports_of_the_old_layout_still_load(run: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    old = _layout1_archive(run["run"], tmp_path / "old.zip")
    direct = Predictor.from_run_dir(run["run"], device="cpu", precision="fp32")
    loaded = Predictor.load(old, device="cpu", precision="fp32")
    images = np.load(run["data"])["images"][:3].astype(np.float32)
    np.testing.assert_array_equal(loaded.probabilities(images), direct.probabilities(images))
    assert read_metadata(old)["format_version"] == 1
    npz, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(npz, images=images)
    assert main(["predict", str(npz), "--model", str(old), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    # a layout-1 archive that claims the new format, or the new layout claiming the old one, is refused
    meta = json.loads(zipfile.ZipFile(old).read("configs/metadata.json"))
    forged = _rewrite(old, tmp_path / "forged.zip", {"configs/metadata.json": json.dumps({**meta, "format_version": 2}).encode()})
    with pytest.raises(LungsegError, match="does not match the zip's layout"):
        read_bundle(forged)


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


def test_export_states_the_input_pixel_size_and_refuses_a_hu_window_for_a_hu_model(
        run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stated.zip"
    assert main(["export", str(run["run"]), str(out), "--pixel-mm", "0.8"]) == 0
    assert Predictor.from_bundle(out, device="cpu").fingerprint.pixel_mm == 0.8
    assert Predictor.from_bundle(out, device="cpu").fingerprint.unit_window is None
    capsys.readouterr()
    assert main(["export", str(run["run"]), str(tmp_path / "bad.zip"), "--unit-window", "-1000", "400"]) == 2
    assert "unit_window" in capsys.readouterr().err and not (tmp_path / "bad.zip").exists()
    assert main(["export", str(run["run"]), str(tmp_path / "bad.zip"), "--pixel-mm", "-1"]) == 2
    assert not (tmp_path / "bad.zip").exists()


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


@pytest.mark.parametrize("suffix", ["models/model.safetensors", "models/model.pt", "configs/inference.json"])
def test_altered_or_missing_weights_are_refused(exported: Path, tmp_path: Path, suffix: str) -> None:
    weights = _member(exported, suffix)
    altered = _rewrite(exported, tmp_path / "altered.zip", {weights: b"not the weights"})
    with pytest.raises(LungsegError, match="SHA-256"):
        Predictor.from_bundle(altered)
    if suffix == "models/model.safetensors":
        missing = _rewrite(exported, tmp_path / "missing.zip", {weights: None})
        with pytest.raises(LungsegError, match="not a complete lungseg export"):
            Predictor.from_bundle(missing)


def test_damaged_safetensors_with_a_matching_checksum_give_one_line(exported: Path, tmp_path: Path) -> None:
    member = _member(exported, "models/model.safetensors")
    meta = json.loads(zipfile.ZipFile(exported).read(_member(exported, "configs/metadata.json")))
    junk = b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}"
    meta["files"]["models/model.safetensors"] = _sha(junk)
    bad = _rewrite(exported, tmp_path / "bad.zip", {member: junk, _member(exported, "configs/metadata.json"):
                                                    json.dumps(meta).encode()})
    with pytest.raises(LungsegError, match=r"model\.safetensors: cannot read the safetensors weights") as info:
        Predictor.from_bundle(bad)
    assert "\n" not in str(info.value)


def test_a_second_folder_beside_the_bundle_is_refused(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(LungsegError, match="unexpected member"):
        read_bundle(_rewrite(exported, tmp_path / "two.zip", {"other/configs/config.json": b"{}"}))


def test_weights_that_would_run_code_are_refused(run: dict[str, Path], tmp_path: Path) -> None:
    # a layout-1 checkpoint naming an arbitrary callable, with a matching SHA-256: the weights_only reader refuses it
    old = _layout1_archive(run["run"], tmp_path / "old.zip")

    class Evil:
        def __reduce__(self):  # noqa: D105
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"model": {"w": Evil()}}, buf)
    with zipfile.ZipFile(old) as zf:
        weights = "models/best.pt"
        meta = json.loads(zf.read("configs/metadata.json"))
    meta["files"][weights] = _sha(buf.getvalue())
    evil = _rewrite(old, tmp_path / "evil.zip", {weights: buf.getvalue(), "configs/metadata.json": json.dumps(meta).encode()})
    with pytest.raises(LungsegError, match="weights_only"):
        Predictor.from_bundle(evil)


def test_without_safetensors_a_model_zip_says_what_to_install(run: dict[str, Path], exported: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the model .zip needs safetensors: run directories still load, and the zip names the package."""
    import sys

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # what an environment without it gives
    with pytest.raises(LungsegError, match="need the safetensors package"):
        read_bundle(exported)
    with pytest.raises(LungsegError, match="need the safetensors package"):
        export_model(run["run"], tmp_path / "m.zip")
    assert Predictor.from_run_dir(run["run"], device="cpu").config.model == "attention"


def test_nan_weights_are_refused(exported: Path, tmp_path: Path) -> None:
    from safetensors.torch import load as load_safetensors
    from safetensors.torch import save as save_safetensors

    member, meta_member = _member(exported, "models/model.safetensors"), _member(exported, "configs/metadata.json")
    with zipfile.ZipFile(exported) as zf:
        state, meta = load_safetensors(zf.read(member)), json.loads(zf.read(meta_member))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    weights = save_safetensors(state)
    meta["files"]["models/model.safetensors"] = _sha(weights)
    nan = _rewrite(exported, tmp_path / "nan.zip", {member: weights, meta_member: json.dumps(meta).encode()})
    with pytest.raises(LungsegError, match=r"nan.zip: 1 weight tensor\(s\) hold NaN or infinite values"):
        Predictor.from_bundle(nan)


def test_a_bad_crc_is_one_error_naming_the_file(exported: Path, tmp_path: Path) -> None:
    weights = _member(exported, "models/model.safetensors")
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
    with pytest.raises(LungsegError, match="model/(configs|docs)/[a-z_.]+' unpacks to .* bytes, over the 64 bytes"):
        read_metadata(exported)
