"""Download and unpack public datasets (``lungseg fetch msd-lung --to DIR``).

The download streams to ``<archive>.part`` and resumes from it with an HTTP ``Range`` request
when interrupted; the finished file is verified, renamed, and unpacked with every member checked
(no absolute paths, no ``..``, no links leaving the target folder, no device files).

Verification: the SHA-256 given to :func:`fetch` (or recorded in :data:`MANIFESTS`) is compared
when known; the MSD manifest also records the MD5 that MONAI's ``DecathlonDataset`` uses for the
same file (``monai.apps.datasets``), checked when the manifest URL is used. The SHA-256 of every
download is always printed, so it can be recorded. No SHA-256 of Task06_Lung.tar from an
authoritative source is known to us, hence ``None`` in the manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm.auto import tqdm

from lungseg.errors import DataError

__all__ = ["MANIFESTS", "fetch", "download", "file_digest", "safe_extract"]

MANIFESTS: dict[str, dict[str, Any]] = {
    "msd-lung": {
        "title": "Medical Segmentation Decathlon, Task06_Lung (non-small-cell lung tumours, 96 CT volumes)",
        "url": "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task06_Lung.tar",
        "filename": "Task06_Lung.tar",
        "folder": "Task06_Lung",
        "sha256": None,
        "md5": "8afd997733c7fc0432f71255ba4e52dc",
        "licence": "CC-BY-SA 4.0",
        "citation": "Antonelli et al., The Medical Segmentation Decathlon, Nature Communications 13, 4128 (2022)",
        "homepage": "http://medicaldecathlon.com/",
    },
}

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256", progress: bool = False) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    path = Path(path)
    h = hashlib.new(algorithm)
    with (
        path.open("rb") as fh,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=f"{algorithm} {path.name}", disable=not progress
        ) as bar,
    ):
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _total_from_content_range(header: str | None) -> int | None:
    match = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", header or "")
    return int(match.group(1)) if match else None


def download(url: str, dest: str | os.PathLike[str], progress: bool = True) -> Path:
    """Stream ``url`` to ``dest``, resuming from ``dest + ".part"`` if it exists.

    Args:
        url: http(s) or file URL.
        dest: final file; the data go to ``dest.part`` until complete, then it is renamed.
        progress: tqdm progress bar.

    Returns:
        ``dest``.

    Raises:
        DataError: network/HTTP failure or a connection closed early (the partial file is kept,
            so running again resumes).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lungseg-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            total = _total_from_content_range(err.headers.get("Content-Range"))
            if total == offset:  # the previous run had everything but stopped before renaming
                os.replace(part, dest)
                return dest
            part.unlink()
            return download(url, dest, progress)
        raise DataError(f"{url}: download failed with HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"{url}: cannot connect ({reason}); check the URL and your network") from None
    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            offset = 0  # the server ignored the Range request: start again from byte 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        received = offset
        with (
            part.open("ab" if offset else "wb") as fh,
            tqdm(
                total=expected, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar,
        ):
            try:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as err:
                raise DataError(
                    f"{url}: connection lost after {received} bytes ({err}); run again to resume from {part}"
                ) from None
    if expected is not None and received < expected:
        raise DataError(
            f"{url}: connection closed after {received} of {expected} bytes; run again to resume from {part}"
        )
    os.replace(part, dest)
    return dest


def _unsafe_reason(member: tarfile.TarInfo, target: Path) -> str | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or re.match(r"^[A-Za-z]:", member.name):
        return "absolute path"
    if ".." in name.parts:
        return "path with '..'"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or FIFO"
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = name.parent if member.issym() else PurePosixPath()
        resolved = (target / base / link).resolve() if not link.is_absolute() else Path(link)
        if not resolved.is_relative_to(target.resolve()):
            return f"link to {member.linkname!r} outside the target folder"
    return None


def safe_extract(archive: str | os.PathLike[str], target: str | os.PathLike[str], progress: bool = True) -> list[str]:
    """Extract a tar archive (any compression) into ``target`` after checking every member.

    Returns:
        The top-level names in the archive.

    Raises:
        DataError: not a tar archive, or a member that would land outside ``target``.
    """
    archive, target = Path(archive), Path(target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                reason = _unsafe_reason(member, target)
                if reason:
                    raise DataError(f"{archive}: refusing to extract member {member.name!r} ({reason})")
            target.mkdir(parents=True, exist_ok=True)
            for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", disable=not progress):
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, target, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; members were checked above
                    tar.extract(member, target)
    except tarfile.TarError as err:
        raise DataError(f"{archive}: not a readable tar archive ({err})") from None
    return sorted({PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts})


def fetch(
    name: str = "msd-lung",
    to: str | os.PathLike[str] = "data",
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    keep_archive: bool = True,
) -> Path:
    """Download, verify and unpack a dataset of :data:`MANIFESTS`.

    Args:
        name: manifest key (``"msd-lung"``).
        to: output folder (created); holds the archive, its ``.part`` while downloading, and the
            extracted dataset folder.
        url: alternative URL (a mirror); the manifest's MD5 is then not applied, only ``sha256``.
        sha256: expected SHA-256 (overrides the manifest's).
        progress: tqdm progress bars.
        keep_archive: keep the archive after extraction.

    Returns:
        The extracted dataset folder, ready for :func:`lungseg.data.open_dataset`.

    Raises:
        DataError: unknown name, download failure, checksum mismatch (the bad file is deleted),
            or an unsafe archive.
    """
    if name not in MANIFESTS:
        raise DataError(f"unknown dataset {name!r}; available: {sorted(MANIFESTS)}")
    manifest = MANIFESTS[name]
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise DataError(f"{to}: --to must be a folder, but it is a file")
    folder = to / manifest["folder"]
    marker = to / f".{manifest['folder']}.extracted"
    if marker.is_file() and folder.is_dir():
        print(f"{folder} already extracted (sha256 {marker.read_text().strip()})", file=sys.stderr)
        return folder
    source = url or manifest["url"]
    expected_sha = (sha256 or manifest["sha256"] or "").lower() or None
    expected_md5 = manifest["md5"] if url is None else None
    archive = to / manifest["filename"]
    if not archive.is_file():
        download(source, archive, progress=progress)
    digest = file_digest(archive, "sha256", progress=progress)
    print(f"sha256 {digest}  {archive}", file=sys.stderr)
    if expected_sha is not None and digest != expected_sha:
        archive.unlink()
        raise DataError(
            f"{archive}: SHA-256 mismatch (expected {expected_sha}, got {digest}); the file was deleted, "
            "run again to download it anew"
        )
    if expected_md5 is not None:
        md5 = file_digest(archive, "md5", progress=progress)
        if md5 != expected_md5:
            archive.unlink()
            raise DataError(f"{archive}: MD5 mismatch (expected {expected_md5}, got {md5}); the file was deleted")
    tops = safe_extract(archive, to, progress=progress)
    if not folder.is_dir():
        raise DataError(f"{archive}: expected a top-level folder {manifest['folder']!r}, found {tops}")
    marker.write_text(digest + "\n")
    if not keep_archive:
        archive.unlink()
    return folder
