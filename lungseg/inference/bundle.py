"""A trained model as one shareable file: ``lungseg export RUN model.zip`` and ``predict --model model.zip``.

The zip is laid out like a MONAI bundle (``configs/metadata.json``, ``models/``, ``docs/``)::

    configs/metadata.json     what the file is, its network's inputs and outputs, and every member's SHA-256
    configs/<config>          the run's TrainConfig            (names as in lungseg.rundir.RunDir)
    configs/<fingerprint>     the intensity fingerprint of eq. (1)
    models/<checkpoint>       the weights (a state dict: tensors and plain types only)
    docs/README.md            the model card

Loading never runs code from the file: member names are checked before anything is read (no
absolute paths, no ``..``, no links, nothing but the members above), each member's size is capped
and its SHA-256 compared with the metadata, and the weights are read by
:func:`lungseg.rundir.read_checkpoint` (``torch.load(weights_only=True)``). :func:`read_bundle`
unpacks an archive in memory into what :meth:`lungseg.inference.Predictor.from_bundle` builds the
network from; this module never builds one itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.files import atomic_file, check_output
from lungseg.preprocess import Fingerprint
from lungseg.rundir import RunDir, parse_config, read_checkpoint

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "Bundle", "export_model", "is_bundle", "read_bundle",
           "read_metadata"]

#: ``metadata.json``'s ``format``: what marks a zip as a lungseg export.
BUNDLE_FORMAT = "lungseg-model"
#: The layout version; a loader refuses newer ones.
BUNDLE_FORMAT_VERSION = 1

_METADATA = "configs/metadata.json"
_CARD = "docs/README.md"
#: The largest member a loader reads (weights of the paper-scale network are ~140 MB in fp32).
MAX_MEMBER_BYTES = 1 << 30


def _members() -> dict[str, str]:
    """``{zip member: run-directory file name}`` of the files copied from a run (names from RunDir)."""
    ckpt = RunDir(".").checkpoint_path("best").name
    return {f"configs/{RunDir.CONFIG}": RunDir.CONFIG, f"configs/{RunDir.FINGERPRINT}": RunDir.FINGERPRINT,
            f"models/{ckpt}": ckpt}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_value(x: Any) -> Any:
    """Plain JSON of a fingerprint or metric value (dataclasses, numpy numbers, tuples)."""
    if hasattr(x, "__dataclass_fields__"):
        from dataclasses import asdict

        return _json_value(asdict(x))
    if isinstance(x, dict):
        return {str(k): _json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_value(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _model_card(config: dict[str, Any], metadata: dict[str, Any], summary: dict[str, Any],
                evaluation: dict[str, Any] | None) -> str:
    """The model card (docs/README.md): what the model is, how it was trained and measured, and its limits."""
    lines = [
        f"# {metadata['name']}",
        "",
        metadata["description"],
        "",
        "## Model",
        "",
        f"- network: `{config.get('model')}` (base channels {config.get('base_channels')}, depth {config.get('depth')})",
        f"- loss: `{config.get('loss')}`; input: one {config.get('image_size')} x {config.get('image_size')} axial CT slice "
        "in Hounsfield units, clipped and normalised by the fingerprint (eq. 1); output: tumour probability per pixel",
        f"- threshold: {config.get('threshold')}; trained for {summary.get('epochs_run', '?')} epochs on "
        f"`{config.get('data') or 'synthetic phantom'}` (seed {config.get('seed')})",
        f"- best validation Dice: {summary.get('best_val_dice', 'not recorded')} (epoch {summary.get('best_epoch', '?')})",
        "",
        "## Evaluation on the run's test patients",
        "",
    ]
    if evaluation:
        pooled = evaluation.get("pooled") or {}
        shown = {k: v for k, v in pooled.items() if isinstance(v, (int, float))}
        lines += [f"- {k}: {v:.4f}" for k, v in sorted(shown.items())] or ["- (no pooled metrics in the evaluation)"]
    else:
        lines.append("Not evaluated when exported (run `lungseg evaluate --run RUN` first to include it).")
    lines += [
        "",
        "## Intended use and limits",
        "",
        "Research and teaching: the executable companion of a paper, not a medical device. It segments",
        "2D axial slices; its numbers hold for data like its training data (see the book's chapters on",
        "synthetic versus real CT) and nothing is claimed for other scanners, protocols or patients.",
        "",
        "## Use",
        "",
        "```",
        "lungseg predict SCAN --model model.zip --out mask.nii.gz",
        "```",
        "",
        f"Exported {metadata['exported']} with lungseg {metadata['version']}, torch {metadata['pytorch_version']}.",
        "",
    ]
    return "\n".join(lines)


def export_model(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], checkpoint: str = "best",
                 force: bool = False) -> Path:
    """Write a trained run as one zip: weights, configuration, fingerprint, model card and metadata.

    Args:
        run_dir: a run directory of :func:`lungseg.training.train`.
        out: the ``.zip`` to write (it must not be inside the run and not exist unless ``force``).
        checkpoint: ``"best"`` or ``"last"`` (stored under the name of the best checkpoint).
        force: overwrite an existing ``out``.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: the run lacks its configuration, fingerprint or checkpoint.
        LungsegError: ``out`` is not a ``.zip``, exists without ``force``, or the checkpoint is unreadable.
    """
    run = RunDir(run_dir)
    out_path = Path(out)
    if out_path.suffix.lower() != ".zip":
        raise LungsegError(f"{out_path}: the export must be a .zip file")
    if out_path.exists() and not force:
        raise LungsegError(f"{out_path} exists; pass --force to overwrite it")
    check_output(out_path, inputs=[run.path])
    run.require(run.config_path, run.fingerprint_path, run.checkpoint_path(checkpoint))
    state = run.load_checkpoint(checkpoint)  # the safe reader; it also refuses what is not a checkpoint
    weights = io.BytesIO()
    torch.save({"model": state["model"], "epoch": int(state.get("epoch", 0))}, weights)
    ckpt_member = next(m for m, name in _members().items() if m.startswith("models/"))
    payload = {
        f"configs/{RunDir.CONFIG}": run.config_path.read_bytes(),
        f"configs/{RunDir.FINGERPRINT}": run.fingerprint_path.read_bytes(),
        ckpt_member: weights.getvalue(),
    }
    config = json.loads(payload[f"configs/{RunDir.CONFIG}"])
    summary = run.read_metrics() if run.metrics_path.is_file() else {}
    evaluation = run.read_evaluation(True) if run.evaluation_path(True).is_file() else (
        run.read_evaluation(False) if run.evaluation_path(False).is_file() else None)
    metadata = _export_metadata(run, checkpoint, int(state.get("epoch", 0)), config, summary, evaluation)
    metadata["files"] = {name: _sha256(data) for name, data in sorted(payload.items())}
    card = _model_card(config, metadata, summary, evaluation).encode("utf-8")
    metadata["files"][_CARD] = _sha256(card)
    _write_zip(out_path, metadata, payload, card)
    return out_path


def _export_metadata(run: RunDir, checkpoint: str, epoch: int, config: dict[str, Any], summary: dict[str, Any],
                     evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """``configs/metadata.json`` of an export (MONAI bundle fields), without its ``files`` checksums."""
    from lungseg import __version__

    size = int(config.get("image_size") or 0)
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": f"lungseg {config.get('model')} ({config.get('loss')} loss, seed {config.get('seed')})",
        "version": __version__,
        "exported": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_run": run.path.name,
        "checkpoint": checkpoint,
        "epoch": epoch,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"lungseg": __version__, "torch": torch.__version__.split("+")[0]},
        "task": "Lung tumour segmentation on axial CT slices",
        "description": "A 2D tumour-segmentation network of 'Attention-Enhanced Residual U-Net with Hybrid Loss for "
                       "Robust Lung Cancer Segmentation', trained with lungseg.",
        "authors": "The lungseg contributors",
        "intended_use": "research and teaching; not a medical device",
        "data_type": "CT",
        "image_classes": "one channel: Hounsfield units, clipped and z-score normalised by the fingerprint (eq. 1)",
        "label_classes": "one channel: probability of tumour; binary mask after the threshold (or the CRF)",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                                 "spatial_shape": [size, size], "dtype": "float32", "is_patch_data": False,
                                 "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 1,
                                 "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False, "channel_def": {"0": "tumour"}}},
        },
        "threshold": config.get("threshold"),
        "best_val_dice": summary.get("best_val_dice"),
        "test_metrics": _json_value((evaluation or {}).get("pooled")),
    }


def _write_zip(out_path: Path, metadata: dict[str, Any], payload: dict[str, bytes], card: bytes) -> None:
    """The zip, written with :func:`lungseg.files.atomic_file` (a killed export leaves no half file)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path) as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_METADATA, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        for name, data in sorted(payload.items()):
            zf.writestr(name, data)
        zf.writestr(_CARD, card)


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file that looks like a zip (a lungseg export or not); a directory is not."""
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)


def _check_names(path: Path, zf: zipfile.ZipFile) -> None:
    """Refuse unsafe or unexpected member names before anything is read."""
    allowed = {_METADATA, _CARD, *_members()}
    for info in zf.infolist():
        name = info.filename
        pure = PurePosixPath(name)
        if (name.startswith(("/", "\\")) or "\\" in name or ":" in name or pure.is_absolute()
                or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))):
            raise LungsegError(f"{path}: unsafe member name {name!r} in the zip; refusing to read it")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise LungsegError(f"{path}: member {name!r} is a link; refusing to read it")
        if info.is_dir():
            continue
        if name not in allowed:
            raise LungsegError(f"{path}: unexpected member {name!r}; a lungseg export holds only {sorted(allowed)}")
        if info.file_size > MAX_MEMBER_BYTES:
            raise LungsegError(f"{path}: member {name!r} is {info.file_size} bytes, over the {MAX_MEMBER_BYTES} limit")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata.json`` of a lungseg export, after the member names are checked.

    Raises:
        LungsegError: not a zip, not a lungseg export, a newer format, or unsafe member names.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such model file")
    if not zipfile.is_zipfile(p):
        raise LungsegError(f"{p}: not a zip file; expected a model exported with `lungseg export`")
    with zipfile.ZipFile(p) as zf:
        _check_names(p, zf)
        return _metadata(p, zf)


def _metadata(path: Path, zf: zipfile.ZipFile) -> dict[str, Any]:
    try:
        metadata = json.loads(zf.read(_METADATA))
    except KeyError:
        raise LungsegError(f"{path}: not a lungseg export (no {_METADATA}); make one with `lungseg export RUN model.zip`") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise LungsegError(f"{path}: {_METADATA} is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != BUNDLE_FORMAT:
        raise LungsegError(f"{path}: not a lungseg export ({_METADATA} does not say format {BUNDLE_FORMAT!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION:
        raise LungsegError(f"{path}: export format version {version!r}; this lungseg reads up to {BUNDLE_FORMAT_VERSION}"
                           " (upgrade lungseg)")
    if not isinstance(metadata.get("files"), dict):
        raise LungsegError(f"{path}: {_METADATA} lists no files and their SHA-256")
    return metadata


@dataclass(frozen=True)
class Bundle:
    """A model ``.zip`` unpacked and verified by :func:`read_bundle`.

    Attributes:
        path: the ``.zip``.
        metadata: its ``configs/metadata.json``.
        config: the run's :class:`lungseg.config.TrainConfig`.
        fingerprint: the intensity fingerprint of eq. (1).
        state: the checkpoint (``{"model": state dict, "epoch": int}``), tensors on the CPU.
    """

    path: Path
    metadata: dict[str, Any]
    config: TrainConfig
    fingerprint: Any
    state: dict[str, Any]


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Unpack and verify a model exported by :func:`export_model`, in memory.

    The member names are checked (:func:`read_metadata`), each member is compared with its SHA-256
    in the metadata, and the weights are read by :func:`lungseg.rundir.read_checkpoint`, which
    refuses anything but tensors and plain types. Build the network with
    :meth:`lungseg.inference.Predictor.from_bundle`.

    Args:
        path: the ``.zip``.

    Returns:
        The :class:`Bundle`.

    Raises:
        LungsegError: not a lungseg export, unsafe or unexpected members, a missing member, or a
            member whose SHA-256 differs from the metadata.
    """
    p = Path(path)
    metadata = read_metadata(p)
    data: dict[str, bytes] = {}
    with zipfile.ZipFile(p) as zf:
        names = set(zf.namelist())
        for member, file_name in _members().items():
            if member not in names:
                raise LungsegError(f"{p}: not a complete lungseg export (no {member})")
            data[file_name] = zf.read(member)
            if metadata["files"].get(member) != _sha256(data[file_name]):
                raise LungsegError(f"{p}: {member} does not match its SHA-256 in {_METADATA}; the file is damaged or was altered")
    ckpt = RunDir(".").checkpoint_path("best").name
    return Bundle(
        path=p, metadata=metadata,
        config=parse_config(data[RunDir.CONFIG], f"{p}:{RunDir.CONFIG}"),
        fingerprint=Fingerprint.from_json_text(data[RunDir.FINGERPRINT], f"{p}:{RunDir.FINGERPRINT}"),
        state=read_checkpoint(io.BytesIO(data[ckpt]), f"{p}:{ckpt}"),
    )
