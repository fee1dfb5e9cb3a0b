"""``fetch``: download with resume and verification from a local HTTP server, safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.cli import main
from lungseg.data import open_dataset
from lungseg.data.fetch import MANIFESTS, RECORD, download, fetch, partial_path, safe_extract
from lungseg.errors import DataError, LungsegError


class _Server:
    """A tiny HTTP server on 127.0.0.1 serving one byte string, with ``Range`` support."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests: list[dict[str, str | None]] = []
        self.honour_range = True
        self.cut_after: int | None = None  # close after this many bytes (Content-Length still sent if on)
        self.send_length = True  # False: no Content-Length, the end of the data is the closed connection
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path != "/Task06_Lung.tar":
                    self.send_error(404, "not here")
                    return
                data, start = server.payload, 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if server.send_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body = body[: server.cut_after]
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/Task06_Lung.tar"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _nifti_bytes(array_zhw: np.ndarray, dtype: type) -> bytes:
    img = nib.Nifti1Image(
        np.ascontiguousarray(array_zhw.transpose(2, 1, 0)).astype(dtype), np.diag([0.8, 0.8, 2.5, 1.0])
    )
    return img.to_bytes()


def _msd_tar(n_cases: int = 2) -> bytes:
    """An MSD-like Task06_Lung.tar built in memory (uncompressed .nii files, tiny volumes)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        training = []
        for i in range(1, n_cases + 1):
            image = rng.integers(-1000, 400, size=(3, 8, 8)).astype(np.int16)
            label = np.zeros((3, 8, 8), np.uint8)
            label[1, 2:4, 2:4] = i % 2
            add(f"Task06_Lung/imagesTr/lung_{i:03d}.nii", _nifti_bytes(image, np.int16))
            add(f"Task06_Lung/labelsTr/lung_{i:03d}.nii", _nifti_bytes(label, np.uint8))
            training.append({"image": f"./imagesTr/lung_{i:03d}.nii", "label": f"./labelsTr/lung_{i:03d}.nii"})
        add("Task06_Lung/dataset.json", json.dumps({"name": "Lung", "training": training}).encode())
    return buf.getvalue()


@pytest.fixture(scope="module")
def payload() -> bytes:
    return _msd_tar()


@pytest.fixture()
def server(payload: bytes) -> Iterator[_Server]:
    srv = _Server(payload)
    yield srv
    srv.close()


def test_manifest_records_source_and_licence() -> None:
    m = MANIFESTS["msd-lung"]
    assert m["url"] == "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task06_Lung.tar"
    assert m["licence"] == "CC-BY-SA 4.0" and m["folder"] == "Task06_Lung"
    assert m["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", m["sha256"])


def test_full_download_verify_extract_and_open(tmp_path: Path, server: _Server, payload: bytes, capsys) -> None:
    digest = hashlib.sha256(payload).hexdigest()
    folder = fetch("msd-lung", to=tmp_path, url=server.url, sha256=digest, progress=False)
    assert folder == tmp_path / "Task06_Lung" and (folder / "dataset.json").is_file()
    assert (tmp_path / "Task06_Lung.tar").read_bytes() == payload
    assert not list(tmp_path.glob("*.part"))
    assert digest in capsys.readouterr().err
    ds = open_dataset(folder)
    assert ds.kind == "msd" and ds.patient_ids == ["lung_001", "lung_002"]
    assert ds.has_tumour("lung_001") and not ds.has_tumour("lung_002")
    assert ds["lung_001"].image.shape == (3, 8, 8)
    # a second call finds the extracted folder and downloads nothing
    n = len(server.requests)
    assert fetch("msd-lung", to=tmp_path, url=server.url, progress=False) == folder
    assert len(server.requests) == n


def test_resume_from_truncated_part(tmp_path: Path, server: _Server, payload: bytes) -> None:
    part = partial_path(server.url, tmp_path / "Task06_Lung.tar")
    part.write_bytes(payload[:1000])
    fetch("msd-lung", to=tmp_path, url=server.url, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert server.requests[-1]["range"] == "bytes=1000-"
    assert (tmp_path / "Task06_Lung.tar").read_bytes() == payload


def test_connection_cut_then_resumed(tmp_path: Path, server: _Server, payload: bytes) -> None:
    server.cut_after = 3000
    dest = tmp_path / "Task06_Lung.tar"
    with pytest.raises(DataError, match=r"connection (closed|lost) after 3000 .*resume"):
        download(server.url, dest, progress=False)
    assert partial_path(server.url, dest).stat().st_size == 3000
    server.cut_after = None
    download(server.url, dest, progress=False)
    assert server.requests[-1]["range"] == "bytes=3000-" and dest.read_bytes() == payload


def test_server_ignoring_range_restarts(tmp_path: Path, server: _Server, payload: bytes) -> None:
    server.honour_range = False
    partial_path(server.url, tmp_path / "x").write_bytes(b"stale bytes from another file")
    download(server.url, tmp_path / "x", progress=False)
    assert (tmp_path / "x").read_bytes() == payload


def test_complete_part_with_416(tmp_path: Path, server: _Server, payload: bytes) -> None:
    partial_path(server.url, tmp_path / "x").write_bytes(payload)
    download(server.url, tmp_path / "x", progress=False)
    assert server.requests[-1]["range"] == f"bytes={len(payload)}-"
    assert (tmp_path / "x").read_bytes() == payload


def test_checksum_mismatch(tmp_path: Path, server: _Server) -> None:
    with pytest.raises(DataError, match=r"Task06_Lung\.tar: SHA-256 mismatch \(expected 0{64}"):
        fetch("msd-lung", to=tmp_path, url=server.url, sha256="0" * 64, progress=False)
    assert not (tmp_path / "Task06_Lung.tar").exists() and not (tmp_path / "Task06_Lung").exists()


def test_http_and_connection_errors(tmp_path: Path, server: _Server) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download(server.url.replace("Task06_Lung.tar", "nope.tar"), tmp_path / "y", progress=False)
    with pytest.raises(DataError, match="cannot connect"):
        download("http://127.0.0.1:9/none.tar", tmp_path / "y", progress=False)
    with pytest.raises(DataError, match="unknown dataset 'msd-liver'"):
        fetch("msd-liver", to=tmp_path, progress=False)


def _tar_with(tmp_path: Path, name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        data = b"" if kind != tarfile.REGTYPE else b"pwned"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("name", "kind", "linkname", "reason"),
    [
        ("../escape.txt", tarfile.REGTYPE, "", r"'\.\.'"),
        ("/etc/evil.txt", tarfile.REGTYPE, "", "absolute path"),
        ("Task06_Lung/link", tarfile.SYMTYPE, "../../outside", "outside the target"),
        ("Task06_Lung/abs", tarfile.SYMTYPE, "/etc/passwd", "outside the target"),
        ("Task06_Lung/dev", tarfile.CHRTYPE, "", "device"),
    ],
)
def test_safe_extract_rejects_unsafe_members(
    tmp_path: Path, name: str, kind: bytes, linkname: str, reason: str
) -> None:
    archive = _tar_with(tmp_path, name, kind, linkname)
    target = tmp_path / "out"
    with pytest.raises(DataError, match=rf"evil\.tar: refusing to extract member .*{reason}"):
        safe_extract(archive, target, progress=False)
    assert not (tmp_path / "escape.txt").exists() and not target.exists()


def test_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"definitely not a tar archive" * 20)
    with pytest.raises(DataError, match=r"x\.tar: not a readable tar archive"):
        safe_extract(tmp_path / "x.tar", tmp_path / "o", progress=False)


def test_manifest_md5_checked_for_default_url(
    tmp_path: Path, server: _Server, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(MANIFESTS["msd-lung"], "url", server.url)
    monkeypatch.setitem(MANIFESTS["msd-lung"], "md5", hashlib.md5(payload).hexdigest())
    assert fetch("msd-lung", to=tmp_path / "ok", progress=False).is_dir()
    monkeypatch.setitem(MANIFESTS["msd-lung"], "md5", "f" * 32)
    with pytest.raises(DataError, match=r"MD5 mismatch \(expected f{32}"):
        fetch("msd-lung", to=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "Task06_Lung.tar").exists()



# --- issue 14, defect 5: fetch verifies everything, from the CLI too ------------------------------------------


def _tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _member_end(payload: bytes, index: int) -> int:
    """Byte offset where member ``index``'s (padded) data end: a cut there leaves a tar that lists cleanly."""
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        member = tar.getmembers()[index]
    return member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _only_checksum(monkeypatch: pytest.MonkeyPatch, sha256: str | None = None, md5: str | None = None) -> None:
    monkeypatch.setitem(MANIFESTS["msd-lung"], "sha256", sha256)
    monkeypatch.setitem(MANIFESTS["msd-lung"], "md5", md5)


def _record(folder: Path) -> dict:
    return json.loads((folder / RECORD).read_text())


def test_every_manifest_entry_has_a_known_checksum() -> None:
    for name, m in MANIFESTS.items():
        assert re.fullmatch(r"[0-9a-f]{64}", m["sha256"] or "") or re.fullmatch(r"[0-9a-f]{32}", m["md5"] or ""), name
    assert MANIFESTS["msd-lung"]["md5"] == "8afd997733c7fc0432f71255ba4e52dc"  # MONAI DecathlonDataset, Task06_Lung


def test_manifest_checksum_applies_to_a_mirror_url(
    tmp_path: Path, server: _Server, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_checksum(monkeypatch, md5="f" * 32)
    got = hashlib.md5(payload).hexdigest()
    msg = rf"Task06_Lung\.tar: MD5 mismatch \(expected f{{32}}, from the 'msd-lung' manifest; got {got}\)"
    with pytest.raises(DataError, match=msg):
        fetch("msd-lung", to=tmp_path, url=server.url, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # archive deleted, nothing extracted, nothing recorded
    _only_checksum(monkeypatch, md5=hashlib.md5(payload).hexdigest())
    assert fetch("msd-lung", to=tmp_path, url=server.url, progress=False).is_dir()


def test_no_known_checksum_is_refused_unless_no_verify(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _only_checksum(monkeypatch)
    msg = r"127\.0\.0\.1.*Task06_Lung\.tar: no checksum is known for 'msd-lung'.*--sha256.*--no-verify"
    with pytest.raises(DataError, match=msg):
        fetch("msd-lung", to=tmp_path, url=server.url, progress=False)
    assert server.requests == [] and not any(tmp_path.iterdir())
    assert main(["fetch", "--to", str(tmp_path), "--url", server.url, "--quiet"]) == 2
    assert "no checksum is known" in capsys.readouterr().err
    assert main(["fetch", "--to", str(tmp_path), "--url", server.url, "--quiet", "--no-verify"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: --no-verify" in err and "NOT verified" in err
    assert (tmp_path / "Task06_Lung" / "dataset.json").is_file()
    assert not (tmp_path / RECORD).exists()  # an unverified download is not recorded as verified


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [("--sha256", "xyz", "64 hex digits"), ("--sha256", "a" * 63, "64 hex digits"),
     ("--md5", "g" * 32, "32 hex digits"), ("--md5", "a" * 64, "32 hex digits")],
)
def test_cli_checksum_flags_are_validated(
    tmp_path: Path, flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fetch", "--to", str(tmp_path), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument ") and flag in err[0] and expected in err[0]
    with pytest.raises(LungsegError, match=expected):
        fetch("msd-lung", to=tmp_path, **{flag[2:]: value}, progress=False)


def test_cli_checksum_flags_verify_and_a_mismatch_deletes(
    tmp_path: Path, server: _Server, payload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    digest, md5 = hashlib.sha256(payload).hexdigest(), hashlib.md5(payload).hexdigest()
    base = ["fetch", "--to", str(tmp_path), "--url", server.url, "--quiet"]
    assert main([*base, "--sha256", "0" * 64]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert len(err) == 1 and err[0].startswith("error: ") and "Task06_Lung.tar: SHA-256 mismatch" in err[0]
    assert "0" * 64 in err[0] and digest in err[0] and "deleted" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "Task06_Lung.tar").exists() and not (tmp_path / "Task06_Lung").exists()
    assert main([*base, "--md5", "1" * 32]) == 2
    err = capsys.readouterr().err
    assert "MD5 mismatch" in err and "1" * 32 in err and md5 in err and not (tmp_path / "Task06_Lung.tar").exists()
    assert main([*base, "--sha256", digest, "--no-verify"]) == 2
    assert "--no-verify contradicts" in capsys.readouterr().err
    assert main([*base, "--md5", md5.upper()]) == 0
    assert (tmp_path / "Task06_Lung" / "dataset.json").is_file()


def test_first_verified_download_is_recorded_and_checked_later(
    tmp_path: Path, server: _Server, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hashlib.sha256(payload).hexdigest()
    _only_checksum(monkeypatch, md5=hashlib.md5(payload).hexdigest())
    folder = fetch("msd-lung", to=tmp_path, url=server.url, progress=False)
    record = _record(tmp_path)["msd-lung"]
    assert record["sha256"] == digest and record["md5"] == hashlib.md5(payload).hexdigest()
    assert record["url"] == server.url and record["verified_by"] == ["the 'msd-lung' manifest"]
    other = _msd_tar(n_cases=3)
    # re-extraction of an archive swapped after the verified download: the record catches it
    (tmp_path / ".Task06_Lung.extracted").unlink()
    (tmp_path / "Task06_Lung.tar").write_bytes(other)
    shutil.rmtree(folder)
    _only_checksum(monkeypatch)  # the manifest knows nothing now: the record alone must hold
    msg = rf"Task06_Lung\.tar: SHA-256 mismatch \(expected {digest}, from the record .*{re.escape(RECORD)}"
    with pytest.raises(DataError, match=msg):
        fetch("msd-lung", to=tmp_path, url=server.url, progress=False)
    assert not folder.exists() and not (tmp_path / "Task06_Lung.tar").exists()
    # re-download from a server that now serves another file, even with --no-verify
    server.payload = other
    with pytest.raises(DataError, match=rf"SHA-256 mismatch \(expected {digest}, from the record"):
        fetch("msd-lung", to=tmp_path, url=server.url, verify=False, progress=False)
    assert not folder.exists()
    # a given checksum that contradicts the record is refused before anything is downloaded
    n = len(server.requests)
    with pytest.raises(DataError, match=rf"{re.escape(RECORD)}: records SHA-256 {digest} .* but --sha256 expects"):
        fetch("msd-lung", to=tmp_path, url=server.url, sha256=hashlib.sha256(other).hexdigest(), progress=False)
    assert len(server.requests) == n
    server.payload = payload
    assert fetch("msd-lung", to=tmp_path, url=server.url, progress=False) == folder


def test_already_extracted_folder_checked_against_a_given_sha256(
    tmp_path: Path, server: _Server, payload: bytes
) -> None:
    fetch("msd-lung", to=tmp_path, url=server.url, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    (tmp_path / RECORD).unlink()
    msg = r"Task06_Lung: already extracted from an archive with SHA-256 [0-9a-f]{64}, not a{64}"
    with pytest.raises(DataError, match=msg):
        fetch("msd-lung", to=tmp_path, url=server.url, sha256="a" * 64, progress=False)


@pytest.mark.parametrize("where", ["member boundary", "inside a member"])
def test_truncated_download_without_length_is_never_extracted(
    tmp_path: Path, server: _Server, payload: bytes, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    _only_checksum(monkeypatch, md5=hashlib.md5(payload).hexdigest())
    server.send_length = False
    server.cut_after = _member_end(payload, 1) if where == "member boundary" else _member_end(payload, 1) + 100
    with pytest.raises(DataError, match=r"Task06_Lung\.tar: MD5 mismatch \(expected "):
        fetch("msd-lung", to=tmp_path, url=server.url, progress=False)
    assert not any(tmp_path.iterdir())  # no archive, no folder, no marker, no record
    # unverified (--no-verify), the tar check still refuses it before writing a file
    with pytest.raises(DataError, match=r"Task06_Lung\.tar: .*truncated or corrupt"):
        fetch("msd-lung", to=tmp_path, url=server.url, verify=False, progress=False)
    assert not (tmp_path / "Task06_Lung").exists() and not (tmp_path / ".Task06_Lung.extracted").exists()


def test_part_of_another_url_is_never_resumed(tmp_path: Path, server: _Server, payload: bytes) -> None:
    dest = tmp_path / "Task06_Lung.tar"
    other = partial_path("https://elsewhere.example/Task06_Lung.tar", dest)
    assert other != partial_path(server.url, dest) and other.name.startswith("Task06_Lung.tar.")
    other.write_bytes(payload[:500] + b"X" * 1500)
    (tmp_path / "Task06_Lung.tar.part").write_bytes(b"Y" * 700)  # an older lungseg's URL-less .part
    download(server.url, dest, progress=False)
    assert server.requests == [{"path": "/Task06_Lung.tar", "range": None}]
    assert dest.read_bytes() == payload and not list(tmp_path.glob("*.part"))


def test_partial_path_is_keyed_to_the_url(tmp_path: Path) -> None:
    a = partial_path("https://a.example/T.tar", tmp_path / "T.tar")
    assert a == partial_path("https://a.example/T.tar", tmp_path / "T.tar")
    assert a != partial_path("https://b.example/T.tar", tmp_path / "T.tar")
    assert re.fullmatch(r"T\.tar\.[0-9a-f]{16}\.part", a.name)


def test_wrong_top_level_folder_extracts_nothing(tmp_path: Path, server: _Server) -> None:
    server.payload = _tar_of({"Task07_Pancreas/dataset.json": b"{}"})
    msg = r"Task06_Lung\.tar: expected a top-level folder 'Task06_Lung', found \['Task07_Pancreas'\]"
    with pytest.raises(DataError, match=msg):
        fetch("msd-lung", to=tmp_path, url=server.url, sha256=hashlib.sha256(server.payload).hexdigest(),
              progress=False)
    assert not (tmp_path / "Task07_Pancreas").exists() and not (tmp_path / ".Task06_Lung.extracted").exists()


def test_member_outside_the_top_level_folder_extracts_nothing(tmp_path: Path, server: _Server) -> None:
    server.payload = _tar_of({"Task06_Lung/dataset.json": b"{}", "Task06_Lung/a.nii": b"1", "elsewhere.txt": b"2"})
    msg = r"refusing to extract member 'elsewhere\.txt' \(not inside the expected top-level folder 'Task06_Lung'\)"
    with pytest.raises(DataError, match=msg):
        fetch("msd-lung", to=tmp_path, url=server.url, sha256=hashlib.sha256(server.payload).hexdigest(),
              progress=False)
    assert not (tmp_path / "Task06_Lung").exists() and not (tmp_path / "elsewhere.txt").exists()
    assert not (tmp_path / ".Task06_Lung.extracted").exists()


@pytest.mark.parametrize(
    "damage", ["cut at a member boundary", "cut inside a member", "damaged header", "cut in a header"]
)
def test_truncated_or_corrupt_tar_extracts_nothing(tmp_path: Path, payload: bytes, damage: str) -> None:
    end = _member_end(payload, 1)
    data = {
        "cut at a member boundary": payload[:end],
        "cut inside a member": payload[: end - 200],
        "damaged header": payload[:end] + b"\xff" * 512 + payload[end + 512 :],
        "cut in a header": payload[: end + 100],
    }[damage]
    archive = tmp_path / "t.tar"
    archive.write_bytes(data)
    target = tmp_path / "out"
    with pytest.raises(DataError, match=r"t\.tar: (not a readable tar archive, )?truncated or corrupt"):
        safe_extract(archive, target, progress=False)
    assert not target.exists()


def test_unsafe_member_after_safe_ones_extracts_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "t.tar"
    archive.write_bytes(_tar_of({"Task06_Lung/a.txt": b"a", "Task06_Lung/b.txt": b"b", "Task06_Lung/../../x": b"x"}))
    with pytest.raises(DataError, match=r"refusing to extract member 'Task06_Lung/\.\./\.\./x' \(path with '\.\.'\)"):
        safe_extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_link_leaving_the_top_level_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("Task06_Lung/link")
        info.type, info.linkname = tarfile.SYMTYPE, "../other/secret"
        tar.addfile(info)
    with pytest.raises(DataError, match="outside the target folder"):
        safe_extract(archive, tmp_path / "out", progress=False, top="Task06_Lung")
    assert safe_extract(archive, tmp_path / "out", progress=False) == ["Task06_Lung"]  # no top: inside the target


def test_macos_resource_file_beside_the_folder_is_skipped(tmp_path: Path, payload: bytes) -> None:
    archive = tmp_path / "t.tar"
    with tarfile.open(fileobj=io.BytesIO(payload)) as src, tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("._Task06_Lung")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"meta"))
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member))
    tops = safe_extract(archive, tmp_path / "out", progress=False, top="Task06_Lung")
    assert tops == ["._Task06_Lung", "Task06_Lung"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Task06_Lung"]


def test_corrupt_record_is_an_error(tmp_path: Path, server: _Server, payload: bytes) -> None:
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(DataError, match=rf"{re.escape(RECORD)}: unreadable record of verified downloads"):
        fetch("msd-lung", to=tmp_path, url=server.url, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    (tmp_path / RECORD).write_text(json.dumps({"msd-lung": {"sha256": "short"}}))
    with pytest.raises(DataError, match=r"not a record of verified downloads"):
        fetch("msd-lung", to=tmp_path, url=server.url, progress=False)
