"""Download, verify and unpack public datasets (``lungseg fetch msd-lung --to DIR``).

Nothing is unpacked from an archive that was not verified, unless verification is switched off
explicitly (``verify=False``, ``--no-verify``, which prints a warning that says so).

Checksums, all of which must match:

* ``sha256``/``md5`` given to :func:`fetch` (``--sha256``/``--md5``); they replace the manifest's.
* Otherwise the manifest's (:data:`MANIFESTS`), for the manifest URL and for a mirror given with
  ``url`` alike (a mirror serves the same file). The MSD entry holds the MD5 that MONAI's
  ``DecathlonDataset`` uses for Task06_Lung.tar (``monai.apps.datasets``); no SHA-256 from an
  authoritative source is known to us, hence ``None``.
* The SHA-256 recorded in ``<to>/.lungseg-fetch.json`` (:data:`RECORD`) when a download was first
  verified: every later re-download or re-extraction into the same folder is checked against it,
  with ``verify=False`` too. Delete that file to fetch a different archive into the folder.

A dataset for which no checksum is known at all is refused (before anything is downloaded) unless
one is given or ``verify=False``. On a mismatch the archive is deleted and the error names both
digests. The SHA-256 of every archive is printed.

Download: streams to ``<archive>.<url key>.part`` (:func:`partial_path`; the name holds a hash of
the URL, so a partial file of another URL is never resumed into this one) and resumes from it with
an HTTP ``Range`` request when interrupted. A download that ends early is caught by its length when
the server sends one, and by the checksum in every case, before anything is extracted.

Extraction (:func:`safe_extract`): the whole member list is read first and the archive must be
complete (every member's data present, the end-of-archive block after the last member); every
member must lie in the expected top-level folder, with no absolute path, no ``..``, no link leaving
that folder and no device file. Only then is any file written; the ``.<folder>.extracted`` marker
is written last.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm.auto import tqdm

from lungseg.errors import DataError, LungsegError
from lungseg.files import atomic_write_text

__all__ = [
    "MANIFESTS",
    "RECORD",
    "check_hex",
    "fetch",
    "download",
    "partial_path",
    "safe_extract",
]

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

RECORD = ".lungseg-fetch.json"
"""File name, inside ``--to``, of the record of verified downloads (dataset name -> SHA-256, ...)."""

_CHUNK = 1 << 20
_TIMEOUT_S = 60
_HEX_DIGITS = {"sha256": 64, "md5": 32}
_LABEL = {"sha256": "SHA-256", "md5": "MD5"}


def check_hex(value: str, algorithm: str) -> str:
    """``value`` in lower case, after checking it is a hex digest of ``algorithm`` (sha256 or md5).

    Raises:
        LungsegError: not hex, or not the digest's length.
    """
    n = _HEX_DIGITS[algorithm]
    digest = value.strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{n}}}", digest):
        raise LungsegError(f"expected an {_LABEL[algorithm]} of {n} hex digits, got {value!r}")
    return digest


def _digests(path: Path, algorithms: list[str], progress: bool) -> dict[str, str]:
    """Hex digests of a file for several algorithms, in one read (1 MiB chunks)."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with (
        path.open("rb") as fh,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=f"{'+'.join(algorithms)} {path.name}",
            disable=not progress,
        ) as bar,
    ):
        while chunk := fh.read(_CHUNK):
            for h in hashes.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {a: h.hexdigest() for a, h in hashes.items()}


def partial_path(url: str, dest: str | os.PathLike[str]) -> Path:
    """Where :func:`download` keeps the partial data of ``url`` for ``dest``.

    ``<dest>.<16 hex digits of the URL's SHA-256>.part``: keyed to the URL, so a partial file left by
    another URL (another mirror, another release) is never resumed into this one.
    """
    dest = Path(dest)
    return dest.with_name(f"{dest.name}.{hashlib.sha256(url.encode()).hexdigest()[:16]}.part")


def _stale_parts(dest: Path) -> list[Path]:
    """Partial files for ``dest`` of any URL (and the URL-less ``<dest>.part`` of older versions)."""
    pattern = re.compile(re.escape(dest.name) + r"(\.[0-9a-f]{16})?\.part")
    if not dest.parent.is_dir():
        return []
    return sorted(p for p in dest.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total length) of a ``Content-Range`` header; None where absent or ``*``."""
    match = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", header or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def download(url: str, dest: str | os.PathLike[str], progress: bool = True) -> Path:
    """Stream ``url`` to ``dest``, resuming from :func:`partial_path` ``(url, dest)`` if it exists.

    Args:
        url: http(s) or file URL.
        dest: final file; the data go to ``partial_path(url, dest)`` until complete, then it is
            renamed and the partial files of other URLs for ``dest`` are removed.
        progress: tqdm progress bar.

    Returns:
        ``dest``. A server that sends no length cannot be checked here for an early end: verify the
        file's checksum before using it (:func:`fetch` always does).

    Raises:
        DataError: network/HTTP failure or a connection closed early (the partial file is kept,
            so running again resumes).
    """
    dest = Path(dest)
    part = partial_path(url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lungseg-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            _, total = _content_range(err.headers.get("Content-Range"))
            if total == offset:  # the previous run had everything but stopped before renaming
                return _finish(part, dest)
            part.unlink()
            return download(url, dest, progress)
        raise DataError(f"{url}: download failed with HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"{url}: cannot connect ({reason}); check the URL and your network") from None
    with response:
        status = getattr(response, "status", 200)
        first, total = _content_range(response.headers.get("Content-Range"))
        if offset and status != 206:
            offset = 0  # the server ignored the Range request: start again from byte 0
        elif offset and first is not None and first != offset:
            response.close()
            part.unlink()  # the server sent another range than asked for: start again
            return download(url, dest, progress)
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else total
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
    return _finish(part, dest)


def _finish(part: Path, dest: Path) -> Path:
    os.replace(part, dest)
    for stale in _stale_parts(dest):
        stale.unlink()
        print(f"removed {stale}, a partial download of {dest.name} from another URL", file=sys.stderr)
    return dest


def _unsafe_reason(member: tarfile.TarInfo, target: Path, root: Path) -> str | None:
    """Why ``member`` must not be extracted into ``target`` (links must stay inside ``root``)."""
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
        if not resolved.is_relative_to(root.resolve()):
            return f"link to {member.linkname!r} outside the target folder"
    elif not (member.isfile() or member.isdir()):
        return "not a file, folder or link"
    return None


def _check_complete(tar: tarfile.TarFile, archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Refuse an archive that ends before its end-of-archive block.

    ``tarfile`` stops listing members without an error when the data end exactly after a member
    (or at a damaged header), so a download cut at such a point would look like a smaller archive.
    A complete tar has a zero block where the listing stopped.
    """
    assert tar.fileobj is not None
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) != tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        last = f" (after member {members[-1].name!r})" if members else ""
        what = "the data end" if len(block) < tarfile.BLOCKSIZE else "a damaged header follows"
        raise DataError(
            f"{archive}: truncated or corrupt tar archive: {what} at byte {tar.offset}{last} where the "
            "end-of-archive block should be"
        )


def safe_extract(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    progress: bool = True,
    top: str | None = None,
) -> list[str]:
    """Extract a tar archive (any compression) into ``target`` after checking all of it.

    Before any file is written: the whole member list is read and the archive checked complete;
    every member is checked (no absolute path, no ``..``, no link leaving the target, or ``top``
    when given, no device or FIFO); with ``top``, every member must lie in that top-level folder
    (macOS ``._*`` files beside it are skipped, not extracted).

    Returns:
        The top-level names in the archive.

    Raises:
        DataError: not a tar archive, truncated or corrupt, a member that would land outside
            ``target`` (or ``top``), or ``top`` missing. Nothing has been written then.
    """
    archive, target = Path(archive), Path(target)
    try:
        tar = tarfile.open(archive, "r:*")
    except tarfile.TarError as err:
        reason = " ".join(str(err).split())  # r:* lists one line per compression tried
        raise DataError(f"{archive}: not a readable tar archive ({reason})") from None
    with tar:
        try:
            members = tar.getmembers()
            _check_complete(tar, archive, members)
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
            raise DataError(f"{archive}: not a readable tar archive, truncated or corrupt ({err})") from None
        tops = sorted({PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts})
        root = target / top if top is not None else target
        if top is not None and top not in tops:
            raise DataError(f"{archive}: expected a top-level folder {top!r}, found {tops}")
        selected = []
        for member in members:
            reason = _unsafe_reason(member, target, root)
            parts = PurePosixPath(member.name).parts
            if reason is None and top is not None and parts and parts[0] != top:
                if parts[0].startswith("._") and len(parts) == 1 and member.isfile():
                    continue  # macOS resource-fork file beside the folder
                reason = f"not inside the expected top-level folder {top!r}"
            if reason:
                raise DataError(f"{archive}: refusing to extract member {member.name!r} ({reason})")
            selected.append(member)
        target.mkdir(parents=True, exist_ok=True)
        try:
            for member in tqdm(selected, desc=f"extracting {archive.name}", unit="file", disable=not progress):
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, target, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; members were checked above
                    tar.extract(member, target)
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as err:
            raise DataError(f"{archive}: cannot extract ({err}); the extraction in {target} is incomplete") from None
    return tops


def _read_record(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable record of verified downloads ({err}); repair or delete it") from None
    ok = isinstance(data, dict) and all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", v["sha256"])
        for v in data.values()
    )
    if not ok:
        raise DataError(
            f"{path}: not a record of verified downloads (expected {{name: {{\"sha256\": 64 hex digits, ...}}}}); "
            "repair or delete it"
        )
    return data


def _write_record(path: Path, name: str, entry: dict[str, Any]) -> None:
    data = _read_record(path)
    data[name] = entry
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def fetch(
    name: str = "msd-lung",
    to: str | os.PathLike[str] = "data",
    url: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    verify: bool = True,
    progress: bool = True,
    keep_archive: bool = True,
) -> Path:
    """Download, verify and unpack a dataset of :data:`MANIFESTS`.

    The steps run in this order: resolve the expected checksums (given, the manifest's, the record's),
    stop early if the archive was already extracted, download or resume, verify and record, check the
    archive, extract, mark done.

    Args:
        name: manifest key (``"msd-lung"``).
        to: output folder (created); holds the archive, its ``.part`` while downloading, the
            record of verified downloads (:data:`RECORD`) and the extracted dataset folder.
        url: alternative URL (a mirror); the manifest's checksums apply to it too.
        sha256: expected SHA-256 of the archive; with ``md5``, replaces the manifest's checksums.
        md5: expected MD5 of the archive; with ``sha256``, replaces the manifest's checksums.
        verify: False unpacks a dataset for which no checksum is known, and skips the manifest's
            (a warning is printed). Given checksums and the recorded SHA-256 are checked anyway.
        progress: tqdm progress bars.
        keep_archive: keep the archive after extraction.

    Returns:
        The extracted dataset folder, ready for :func:`lungseg.data.open_dataset`.

    Raises:
        LungsegError: a malformed ``sha256``/``md5``.
        DataError: unknown name, no checksum known (and ``verify`` true), a checksum contradicting
            the recorded SHA-256, download failure, checksum mismatch (the bad file is deleted),
            or an unsafe, truncated or corrupt archive (nothing is extracted from it).
    """
    if name not in MANIFESTS:
        raise DataError(f"unknown dataset {name!r}; available: {sorted(MANIFESTS)}")
    manifest = MANIFESTS[name]
    sha256 = check_hex(sha256, "sha256") if sha256 is not None else None
    md5 = check_hex(md5, "md5") if md5 is not None else None
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise DataError(f"{to}: --to must be a folder, but it is a file")
    folder = to / manifest["folder"]
    marker = to / f".{manifest['folder']}.extracted"
    archive = to / manifest["filename"]
    record_path = to / RECORD
    recorded = _read_record(record_path).get(name, {})
    source = url or manifest["url"]
    expected = _expected_digests(name, sha256, md5, verify, recorded, record_path)
    if marker.is_file() and folder.is_dir():
        _check_extracted(folder, marker, expected)
        return folder
    _announce_verification(name, source, archive, expected, verify=verify, given=sha256 is not None or md5 is not None)
    if not archive.is_file():
        download(source, archive, progress=progress)
    digests = _verified_digests(archive, expected, progress)
    verified_by = [where for _, _, where in expected if not where.startswith("the record ")]
    if verified_by and not recorded:
        entry = {"filename": manifest["filename"], "url": source, "verified_by": verified_by, **digests}
        _write_record(record_path, name, entry)

    marker.unlink(missing_ok=True)
    safe_extract(archive, to, progress=progress, top=manifest["folder"])
    if not folder.is_dir():
        raise DataError(f"{archive}: expected a top-level folder {manifest['folder']!r} after extraction")
    atomic_write_text(marker, digests["sha256"] + "\n")
    if not keep_archive:
        archive.unlink()
    return folder


def _expected_digests(
    name: str, sha256: str | None, md5: str | None, verify: bool, recorded: dict[str, Any], record_path: Path,
) -> list[tuple[str, str, str]]:
    """The checksums the archive must have, as ``(algorithm, hex digest, where it comes from)``: the given
    ones, else the manifest's (when ``verify``), plus the SHA-256 recorded by an earlier verified download,
    which no given or manifest checksum may contradict."""
    manifest = MANIFESTS[name]
    expected: list[tuple[str, str, str]] = []
    if sha256 is not None or md5 is not None:
        expected += [(a, h, f"--{a}") for a, h in (("sha256", sha256), ("md5", md5)) if h is not None]
    elif verify:
        expected += [(a, manifest[a].lower(), f"the {name!r} manifest") for a in ("sha256", "md5") if manifest.get(a)]
    if recorded:
        for algorithm, digest, where in expected:
            if recorded.get(algorithm) not in (None, digest):
                raise DataError(
                    f"{record_path}: records {_LABEL[algorithm]} {recorded[algorithm]} for {name!r} from an earlier "
                    f"verified download, but {where} expects {digest}; delete {record_path} (or use another --to) "
                    "to fetch a different archive"
                )
        expected.append(("sha256", recorded["sha256"], f"the record {record_path}"))
    return expected


def _check_extracted(folder: Path, marker: Path, expected: list[tuple[str, str, str]]) -> None:
    """Accept an already extracted ``folder`` when its ``marker`` names the expected SHA-256 (and say so)."""
    done = marker.read_text().strip()
    for algorithm, digest, where in expected:
        if algorithm == "sha256" and digest != done:
            raise DataError(
                f"{folder}: already extracted from an archive with SHA-256 {done}, not {digest} ({where}); "
                f"delete {folder} and {marker} to fetch it again"
            )
    print(f"{folder} already extracted (sha256 {done})", file=sys.stderr)


def _announce_verification(
    name: str, source: str, archive: Path, expected: list[tuple[str, str, str]], *, verify: bool, given: bool,
) -> None:
    """Refuse an archive no checksum is known for (unless ``verify`` is off), and warn when it goes unverified."""
    if not expected:
        if verify:
            raise DataError(
                f"{source}: no checksum is known for {name!r}; give the archive's --sha256 HEX or --md5 HEX, "
                "or --no-verify to unpack it unverified"
            )
        print(
            f"WARNING: --no-verify: {archive} is NOT verified against any checksum; nothing guarantees that it is "
            f"the {name!r} archive or that it is complete. Check the SHA-256 printed below yourself.",
            file=sys.stderr,
        )
    elif not verify and not given:
        print(f"WARNING: --no-verify: the {name!r} manifest's checksums are not checked", file=sys.stderr)


def _verified_digests(archive: Path, expected: list[tuple[str, str, str]], progress: bool) -> dict[str, str]:
    """The archive's SHA-256 (printed) and the other expected digests; a mismatch deletes the archive."""
    digests = _digests(archive, sorted({"sha256"} | {a for a, _, _ in expected}), progress)
    print(f"sha256 {digests['sha256']}  {archive}", file=sys.stderr)
    for algorithm, digest, where in expected:
        if digests[algorithm] != digest:
            archive.unlink()
            raise DataError(
                f"{archive}: {_LABEL[algorithm]} mismatch (expected {digest}, from {where}; got {digests[algorithm]}); "
                "the file was deleted, run again to download it anew"
            )
    return digests
