"""``fetch``: download with resume and verification from a local HTTP server, safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.data import open_dataset
from lungseg.data.fetch import MANIFESTS, download, fetch, safe_extract
from lungseg.errors import DataError


class _Server:
    """A tiny HTTP server on 127.0.0.1 serving one byte string, with ``Range`` support."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests: list[dict[str, str | None]] = []
        self.honour_range = True
        self.cut_after: int | None = None  # send Content-Length but close after this many bytes
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
    assert not (tmp_path / "Task06_Lung.tar.part").exists()
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
    part = tmp_path / "Task06_Lung.tar.part"
    part.write_bytes(payload[:1000])
    fetch("msd-lung", to=tmp_path, url=server.url, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert server.requests[-1]["range"] == "bytes=1000-"
    assert (tmp_path / "Task06_Lung.tar").read_bytes() == payload


def test_connection_cut_then_resumed(tmp_path: Path, server: _Server, payload: bytes) -> None:
    server.cut_after = 3000
    dest = tmp_path / "Task06_Lung.tar"
    with pytest.raises(DataError, match=r"connection (closed|lost) after 3000 .*resume"):
        download(server.url, dest, progress=False)
    assert (tmp_path / "Task06_Lung.tar.part").stat().st_size == 3000
    server.cut_after = None
    download(server.url, dest, progress=False)
    assert server.requests[-1]["range"] == "bytes=3000-" and dest.read_bytes() == payload


def test_server_ignoring_range_restarts(tmp_path: Path, server: _Server, payload: bytes) -> None:
    server.honour_range = False
    (tmp_path / "x.part").write_bytes(b"stale bytes from another file")
    download(server.url, tmp_path / "x", progress=False)
    assert (tmp_path / "x").read_bytes() == payload


def test_complete_part_with_416(tmp_path: Path, server: _Server, payload: bytes) -> None:
    (tmp_path / "x.part").write_bytes(payload)
    download(server.url, tmp_path / "x", progress=False)
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
