"""A trained model as one shareable file: ``lungseg export RUN model.zip`` and ``predict --model model.zip``.

The zip is a MONAI bundle (MONAI's *Bundle Specification*, archive format): one folder named after
the file (``model.zip`` holds ``model/``), so ``unzip`` gives a folder that ``monai.bundle.load`` and
``monai.bundle.ConfigParser`` read::

    model/configs/metadata.json     the bundle's metadata (MONAI's required fields) and every member's SHA-256
    model/configs/inference.json    MONAI config: the network (``network_def``), eq. (1) as MONAI transforms
                                    (``preprocessing``), sigmoid and threshold (``postprocessing``)
    model/configs/<config>          the run's TrainConfig            (names as in lungseg.rundir.RunDir)
    model/configs/<fingerprint>     the intensity fingerprint of eq. (1)
    model/models/model.pt           the weights as MONAI stores them (a plain state dict)
    model/models/model.safetensors  the same weights as safetensors (no pickle at all)
    model/docs/README.md            the model card

Exports of lungseg 0.1 (layout version 1: ``configs/``, ``models/<checkpoint>`` and ``docs/`` at the
zip's root, weights as a ``{"model": state dict, "epoch": int}`` checkpoint) are still read.

Loading never runs code from the file: member names are checked before anything is read (no
absolute paths, no ``..``, no links, nothing but the members above), each member's size is capped
and its SHA-256 compared with the metadata; the weights are read from the safetensors member (old
archives: by :func:`lungseg.rundir.read_checkpoint`, ``torch.load(weights_only=True)``), and
``inference.json`` is never parsed by lungseg (its ``_target_`` entries are for MONAI users who
trust the file). :func:`read_bundle` unpacks an archive in memory into what
:meth:`lungseg.inference.Predictor.from_bundle` builds the network from; this module never builds
one itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
import zlib
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError, describe
from lungseg.files import atomic_file, check_output
from lungseg.limits import MAX_ARCHIVE_METADATA_BYTES, MAX_ARCHIVE_WEIGHTS_BYTES
from lungseg.paths import portable
from lungseg.preprocess import Fingerprint
from lungseg.rundir import RunDir, parse_config, read_checkpoint

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "Bundle", "export_model", "is_bundle", "read_bundle",
           "read_metadata"]

#: ``metadata.json``'s ``format``: what marks a zip as a lungseg export.
BUNDLE_FORMAT = "lungseg-model"
#: The layout version written: 2, a MONAI bundle in one folder; 1 (read only): members at the zip's root.
BUNDLE_FORMAT_VERSION = 2

# Member names inside the bundle's folder (MONAI's names where the specification has one).
_METADATA = "configs/metadata.json"
_INFERENCE = "configs/inference.json"
_CARD = "docs/README.md"
_WEIGHTS_PT = "models/model.pt"
_WEIGHTS_SAFETENSORS = "models/model.safetensors"
_CONFIG = f"configs/{RunDir.CONFIG}"
_FINGERPRINT = f"configs/{RunDir.FINGERPRINT}"
# What reading a damaged archive can raise (zipfile, zlib and the stream under them)
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)


def _v1_checkpoint() -> str:
    """Layout 1's weights member: the run's best-checkpoint file name under ``models/``."""
    return f"models/{RunDir('.').checkpoint_path('best').name}"


def _layout_members(version: int) -> set[str]:
    """The member names (relative to the bundle's folder) of layout ``version``."""
    if version == 1:
        return {_METADATA, _CARD, _CONFIG, _FINGERPRINT, _v1_checkpoint()}
    return {_METADATA, _INFERENCE, _CARD, _CONFIG, _FINGERPRINT, _WEIGHTS_PT, _WEIGHTS_SAFETENSORS}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_value(x: Any) -> Any:
    """Plain JSON of a fingerprint or metric value (dataclasses, numpy numbers, tuples)."""
    if hasattr(x, "__dataclass_fields__"):
        return _json_value(asdict(x))
    if isinstance(x, dict):
        return {str(k): _json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_value(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _expected_input(fingerprint: Fingerprint) -> str:
    """The model card's words on the intensities (and pixel size) the model takes."""
    if fingerprint.intensity == "hu":
        text = "in Hounsfield units, clipped and normalised by the fingerprint (eq. 1)"
    elif fingerprint.unit_window is None:
        text = ("with intensities scaled to [0, 1] as the training images were (not Hounsfield units: `lungseg"
                " predict` refuses HU input), normalised by the fingerprint (eq. 1)")
    else:
        low, high = fingerprint.unit_window
        text = ("with intensities scaled to [0, 1] as the training images were, normalised by the fingerprint"
                f" (eq. 1); a scan in Hounsfield units is clipped to [{low:g}, {high:g}] HU and scaled to [0, 1]"
                " by `lungseg predict` first")
    if fingerprint.pixel_mm is not None:
        text += f"; at {fingerprint.pixel_mm:g} mm per pixel (`lungseg predict` resamples a scan's slices to it)"
    return text


def _model_card(config: dict[str, Any], metadata: dict[str, Any], summary: dict[str, Any],
                evaluation: dict[str, Any] | None, fingerprint: Fingerprint, notes: str | None = None) -> str:
    """The model card (docs/README.md): what the model is, how it was trained and measured, and its limits
    (``notes``: the exporter's own section, e.g. the training data's licence and cross-validated numbers)."""
    size = config.get("image_size")
    expected = _expected_input(fingerprint)
    lines = [
        f"# {metadata['name']}",
        "",
        metadata["description"],
        "",
        "## Model",
        "",
        f"- network: `{config.get('model')}` (base channels {config.get('base_channels')}, depth {config.get('depth')})",
        f"- loss: `{config.get('loss')}`; input: one {size} x {size} axial CT image {expected}; output: tumour"
        " probability per pixel",
        f"- test-time augmentation: `{config.get('tta', 'none')}` (`lungseg predict` averages the probabilities over"
        " the symmetries it names; the MONAI bundle's `inference.json` runs the network once)",
        f"- threshold: {config.get('threshold')}; trained for {summary.get('epochs_run', '?')} epochs on "
        f"`{config.get('data') or 'synthetic phantom'}` (seed {config.get('seed')})",
        f"- best validation Dice: {summary.get('best_val_dice', 'not recorded')} (epoch {summary.get('best_epoch', '?')})",
        "",
        "## Evaluation on the run's test patients",
        "",
    ]
    if notes:
        lines[-2:-1] = ["## Training data and measured performance", "", notes.strip(), "",
                        "## Evaluation on the run's test patients"]
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
        "2D slices (axial ones; a model that states its pixel size also gets the coronal and sagittal slices",
        "of a whole scan, `lungseg predict --planes`); its numbers hold for data like its training data (see the book's chapters on",
        "synthetic versus real CT) and nothing is claimed for other scanners, protocols or patients.",
        "",
        "## Use",
        "",
        "```",
        "lungseg predict SCAN --model model.zip --out mask.nii.gz",
        "```",
        "",
        "The zip is a MONAI bundle: unzipped, `monai.bundle.load(NAME, bundle_dir=DIR, workflow_type=\"inference\")`",
        "builds the network from `configs/inference.json` (lungseg must be installed) and loads `models/model.pt`",
        "(call `.eval()` on it); `preprocessing` and `postprocessing` in that file are eq. (1) and the threshold",
        "as MONAI transforms. The same weights are in `models/model.safetensors`.",
        "",
        f"Exported {metadata['exported']} with lungseg {metadata['version']}, torch {metadata['pytorch_version']}.",
        "",
    ]
    return "\n".join(lines)


def _bundle_name(out_path: Path) -> str:
    """The bundle's folder in the zip: the file's name up to its first dot, as MONAI unpacks archives."""
    name = out_path.name.split(".")[0]
    if not name:
        raise LungsegError(f"{out_path}: the export's file name must not start with a dot (it names the bundle's folder)")
    return name


def export_model(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], checkpoint: str = "best",
                 force: bool = False, notes: str | None = None, pixel_mm: float | None = None,
                 unit_window: tuple[float, float] | None = None) -> Path:
    """Write a trained run as one zip, a MONAI bundle: weights, configuration, fingerprint, model card and metadata.

    Args:
        run_dir: a run directory of :func:`lungseg.training.train`.
        out: the ``.zip`` to write (it must not be inside the run and not exist unless ``force``); the
            bundle's folder in it is named after the file (``model.zip``: ``model/``).
        checkpoint: ``"best"`` or ``"last"``.
        force: overwrite an existing ``out``.
        notes: Markdown added to the model card as its "Training data and measured performance" section.
        pixel_mm: states the in-plane pixel size (mm) of the training images in the exported fingerprint,
            so that a scan is resampled to it (:attr:`lungseg.preprocess.Fingerprint.pixel_mm`).
        unit_window: for a model trained on images scaled to [0, 1], the HU window they were scaled
            from, so that the model takes scans in HU (:attr:`lungseg.preprocess.Fingerprint.unit_window`).

    The configuration's ``data`` is recorded as :func:`lungseg.paths.portable` gives it (relative to the
    repository when the data lie in or beside it), so that a published export names no folder of the
    machine that made it.

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
    name = _bundle_name(out_path)
    check_output(out_path, inputs=[run.path])
    run.require(run.config_path, run.fingerprint_path, run.checkpoint_path(checkpoint))
    state = run.load_checkpoint(checkpoint)  # the safe reader; it also refuses what is not a checkpoint
    config, fingerprint = run.read_config(), _stated_input(run.read_fingerprint(), pixel_mm, unit_window)
    config_json = json.loads(run.config_path.read_text(encoding="utf-8"))
    config_json["data"] = portable(config_json["data"]) if config_json.get("data") else config_json.get("data", "")
    payload = {_CONFIG: _json_bytes(config_json), _FINGERPRINT: fingerprint.to_json_text().encode("utf-8"),
               **_weights(state["model"])}
    payload[_INFERENCE] = _json_bytes(_inference_config(config, fingerprint))
    summary = run.read_metrics() if run.metrics_path.is_file() else {}
    evaluation = run.read_evaluation(True) if run.evaluation_path(True).is_file() else (
        run.read_evaluation(False) if run.evaluation_path(False).is_file() else None)
    metadata = _export_metadata(run, checkpoint, int(state.get("epoch", 0)), config_json, summary, evaluation,
                                fingerprint)
    payload[_CARD] = _model_card(config_json, metadata, summary, evaluation, fingerprint, notes).encode("utf-8")
    metadata["files"] = {member: _sha256(data) for member, data in sorted(payload.items())}
    payload[_METADATA] = _json_bytes(metadata)
    _write_zip(out_path, {f"{name}/{member}": data for member, data in payload.items()})
    return out_path


def _stated_input(fingerprint: Fingerprint, pixel_mm: float | None, unit_window: tuple[float, float] | None) -> Fingerprint:
    """``fingerprint`` with the pixel size and HU window the exporter states (the run's own where not given)."""
    changes = {k: v for k, v in (("pixel_mm", pixel_mm), ("unit_window", unit_window)) if v is not None}
    try:
        return replace(fingerprint, **changes)
    except ValueError as exc:
        raise LungsegError(f"export: {exc}") from None


def _json_bytes(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _safetensors() -> Any:
    """``safetensors.torch``, imported where a model ``.zip`` is written or read, so that an environment
    missing it still trains, evaluates and predicts from run directories."""
    try:
        import safetensors.torch
    except ImportError:
        raise LungsegError("model .zip files need the safetensors package, a lungseg dependency: "
                           "pip install 'safetensors>=0.4'") from None
    return safetensors.torch


def _weights(state_dict: dict[str, Any]) -> dict[str, bytes]:
    """The weights as MONAI's ``model.pt`` (a plain state dict) and as safetensors (contiguous tensors)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    pt = io.BytesIO()
    torch.save(tensors, pt)
    return {_WEIGHTS_PT: pt.getvalue(), _WEIGHTS_SAFETENSORS: _safetensors().save(tensors, metadata={"format": "pt"})}


def _inference_config(config: TrainConfig, fingerprint: Fingerprint) -> dict[str, Any]:
    """``configs/inference.json``: the network and eq. (1) in MONAI's config syntax.

    Eq. (1) is the window clip (two ``ThresholdIntensity``, exact) and the z-score with the
    fingerprint's statistics (``NormalizeIntensity``), then the bilinear resize to the network's
    input, as :func:`lungseg.preprocess.preprocess_slices` does; the output is the sigmoid and the
    run's threshold (``AsDiscrete``, ``>=`` as :meth:`lungseg.inference.Predictor.mask`).
    """
    clip = []
    if fingerprint.window is not None:
        low, high = fingerprint.window
        clip = [{"_target_": "ThresholdIntensity", "threshold": low, "above": True, "cval": low},
                {"_target_": "ThresholdIntensity", "threshold": high, "above": False, "cval": high}]
    size = [fingerprint.image_size, fingerprint.image_size]
    return {
        "network_def": {"_target_": "lungseg.models.build_model", "name": config.model, "in_channels": 1,
                        "out_channels": 1, "base_channels": config.base_channels, "depth": config.depth,
                        "batch_norm": config.batch_norm},
        "preprocessing": {"_target_": "Compose", "transforms": [
            *clip, {"_target_": "NormalizeIntensity", "subtrahend": fingerprint.mean, "divisor": fingerprint.std},
            {"_target_": "Resize", "spatial_size": size, "mode": "bilinear"}]},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activations", "sigmoid": True},
            {"_target_": "AsDiscrete", "threshold": config.threshold}]},
    }


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _export_metadata(run: RunDir, checkpoint: str, epoch: int, config: dict[str, Any], summary: dict[str, Any],
                     evaluation: dict[str, Any] | None, fingerprint: Fingerprint) -> dict[str, Any]:
    """``configs/metadata.json`` of an export (MONAI bundle fields), without its ``files`` checksums."""
    from lungseg import __version__

    size = [fingerprint.image_size, fingerprint.image_size]
    torch_version = torch.__version__.split("+")[0]
    hounsfield = fingerprint.intensity == "hu"
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": f"lungseg {config.get('model')} ({config.get('loss')} loss, seed {config.get('seed')})",
        "version": __version__,
        "changelog": {__version__: "exported by lungseg"},
        "monai_version": _package_version("monai"),
        "pytorch_version": torch_version,
        "numpy_version": np.__version__,
        "optional_packages_version": {"lungseg": __version__},
        "required_packages_version": {"lungseg": __version__, "torch": torch_version},
        "exported": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_run": run.path.name,
        "checkpoint": checkpoint,
        "epoch": epoch,
        "task": "Lung tumour segmentation on axial CT slices",
        "description": "A 2D tumour-segmentation network of 'Attention-Enhanced Residual U-Net with Hybrid Loss for "
                       "Robust Lung Cancer Segmentation', trained with lungseg.",
        "authors": "The lungseg contributors",
        "copyright": "The lungseg contributors; see the lungseg licence",
        "intended_use": "research and teaching; not a medical device",
        "data_type": "CT",
        "image_classes": "one channel: " + ("Hounsfield units, clipped and z-score normalised by the fingerprint (eq. 1)"
                                            if hounsfield else "intensities in [0, 1], z-score normalised (eq. 1)"),
        "label_classes": "one channel: probability of tumour; binary mask after the threshold (or the CRF)",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield" if hounsfield else "magnitude",
                                 "modality": "CT", "num_channels": 1, "spatial_shape": size, "dtype": "float32",
                                 "value_range": [], "is_patch_data": False, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 1,
                                 "spatial_shape": size, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False, "channel_def": {"0": "tumour"}}},
        },
        "threshold": config.get("threshold"),
        "test_time_augmentation": config.get("tta", "none"),
        "best_val_dice": summary.get("best_val_dice"),
        "test_metrics": _json_value((evaluation or {}).get("pooled")),
    }


def _write_zip(out_path: Path, members: dict[str, bytes]) -> None:
    """The zip, written with :func:`lungseg.files.atomic_file` (a killed export leaves no half file)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path) as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            zf.writestr(name, data)


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a model file rather than a run directory: any file is read as a model
    ``.zip`` (a truncated or damaged one is then reported as such, not as a missing run directory)."""
    return Path(path).is_file()


def _check_safe(path: Path, info: zipfile.ZipInfo) -> None:
    """Refuse a member whose name could escape the folder it is unpacked into, or that is a link."""
    name = info.filename
    pure = PurePosixPath(name)
    if (name.startswith(("/", "\\")) or "\\" in name or ":" in name or pure.is_absolute()
            or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))):
        raise LungsegError(f"{path}: unsafe member name {name!r} in the zip; refusing to read it")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise LungsegError(f"{path}: member {name!r} is a link; refusing to read it")


def _root(path: Path, zf: zipfile.ZipFile) -> str:
    """The bundle's folder in the zip with a trailing ``/`` (layout 2), or ``""`` (layout 1: members at the root).

    Every member name is checked first; then the folder is the one that holds ``configs/metadata.json``,
    and everything else in the zip must be a member of that layout.
    """
    infos = zf.infolist()
    for info in infos:
        _check_safe(path, info)
    names = {info.filename for info in infos if not info.is_dir()}
    if _METADATA in names:
        prefix, allowed = "", _layout_members(1)
    else:
        roots = sorted(n[: -len(_METADATA)] for n in names if n.endswith("/" + _METADATA) and n.count("/") == 2)
        if len(roots) != 1:
            raise LungsegError(f"{path}: not a lungseg export (no {_METADATA}, alone or in one folder); make one "
                               "with `lungseg export RUN model.zip`")
        prefix, allowed = roots[0], _layout_members(BUNDLE_FORMAT_VERSION)
    expected = {prefix + m for m in allowed}
    for info in infos:
        if info.is_dir():
            if prefix and not info.filename.startswith(prefix) and info.filename != prefix:
                raise LungsegError(f"{path}: unexpected folder {info.filename!r}; a lungseg export holds one folder, "
                                   f"{prefix!r}")
            continue
        if info.filename not in expected:
            raise LungsegError(f"{path}: unexpected member {info.filename!r}; a lungseg export holds only "
                               f"{sorted(expected)}")
        # the unpacked size from the zip directory, before anything is decompressed (lungseg.limits)
        name = info.filename[len(prefix):]
        limit = MAX_ARCHIVE_WEIGHTS_BYTES if name.startswith("models/") else MAX_ARCHIVE_METADATA_BYTES
        if info.file_size > limit:
            raise LungsegError(f"{path}: member {info.filename!r} unpacks to {info.file_size} bytes, over the {limit}"
                               " bytes lungseg reads (lungseg.limits)")
    return prefix


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata.json`` of a lungseg export, after the member names are checked.

    Raises:
        LungsegError: not a zip, not a lungseg export, a newer format, or unsafe member names.
    """
    p = _zip_file(path)
    try:
        with zipfile.ZipFile(p) as zf:
            return _metadata(p, zf, _root(p, zf))
    except _DAMAGED as exc:
        raise LungsegError(f"{p}: damaged model archive ({describe(exc)}); export it again") from None


def _zip_file(path: str | os.PathLike[str]) -> Path:
    """``path``, once it is known to be a zip file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such model file")
    if not zipfile.is_zipfile(p):
        raise LungsegError(f"{p}: not a zip file (or a truncated one); expected a model exported with `lungseg export`")
    return p


def _metadata(path: Path, zf: zipfile.ZipFile, prefix: str) -> dict[str, Any]:
    try:
        metadata = json.loads(zf.read(prefix + _METADATA))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LungsegError(f"{path}: {_METADATA} is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != BUNDLE_FORMAT:
        raise LungsegError(f"{path}: not a lungseg export ({_METADATA} does not say format {BUNDLE_FORMAT!r})")
    version_ = metadata.get("format_version")
    if not isinstance(version_, int) or version_ > BUNDLE_FORMAT_VERSION:
        raise LungsegError(f"{path}: export format version {version_!r}; this lungseg reads up to {BUNDLE_FORMAT_VERSION}"
                           " (upgrade lungseg)")
    if (version_ == 1) != (prefix == ""):
        raise LungsegError(f"{path}: format version {version_} in {_METADATA} does not match the zip's layout "
                           f"({'members at its root' if not prefix else 'one folder'}); the file was altered")
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
    """Unpack and verify a model exported by :func:`export_model` (either layout), in memory.

    The member names are checked (:func:`read_metadata`) and each member is compared with its
    SHA-256 in the metadata. The weights come from ``models/model.safetensors`` (no pickle is read);
    in a layout-1 archive from its checkpoint, read by :func:`lungseg.rundir.read_checkpoint`, which
    refuses anything but tensors and plain types. ``configs/inference.json`` is hashed, never parsed.
    Build the network with :meth:`lungseg.inference.Predictor.from_bundle`.

    Args:
        path: the ``.zip``.

    Returns:
        The :class:`Bundle`.

    Raises:
        LungsegError: not a lungseg export, unsafe or unexpected members, a missing member, a member
            whose SHA-256 differs from the metadata, or weights that cannot be read.
    """
    p = _zip_file(path)
    try:
        with zipfile.ZipFile(p) as zf:
            prefix = _root(p, zf)
            metadata = _metadata(p, zf, prefix)
            layout = 1 if not prefix else BUNDLE_FORMAT_VERSION
            weights = _v1_checkpoint() if layout == 1 else _WEIGHTS_SAFETENSORS
            data = _read_members(p, zf, prefix, metadata, layout, weights)
    except _DAMAGED as exc:  # a bad CRC, a truncated member: zipfile's own exceptions
        raise LungsegError(f"{p}: damaged model archive ({describe(exc)}); export it again") from None
    source = f"{p}:{prefix}{weights}"
    state = (read_checkpoint(io.BytesIO(data[weights]), source) if layout == 1
             else {"model": _read_safetensors(data[weights], source), "epoch": int(metadata.get("epoch") or 0)})
    bad = [k for k, v in state["model"].items()
           if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise LungsegError(f"{p}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]!r}); the model"
                           " diverged or the file is damaged")
    return Bundle(
        path=p, metadata=metadata,
        config=parse_config(data[_CONFIG], f"{p}:{prefix}{_CONFIG}"),
        fingerprint=Fingerprint.from_json_text(data[_FINGERPRINT], f"{p}:{prefix}{_FINGERPRINT}"),
        state=state,
    )


def _read_members(path: Path, zf: zipfile.ZipFile, prefix: str, metadata: dict[str, Any], layout: int,
                  weights: str) -> dict[str, bytes]:
    """``{member name inside the bundle's folder: bytes}``, each checked against its SHA-256 in the metadata."""
    names = set(zf.namelist())
    data: dict[str, bytes] = {}
    for member in sorted(_layout_members(layout) - {_METADATA}):
        if prefix + member not in names:
            if member in (_CONFIG, _FINGERPRINT, weights):
                raise LungsegError(f"{path}: not a complete lungseg export (no {prefix + member})")
            continue
        data[member] = zf.read(prefix + member)
        if metadata["files"].get(member) != _sha256(data[member]):
            raise LungsegError(f"{path}: {prefix + member} does not match its SHA-256 in {_METADATA}; the file is "
                               "damaged or was altered")
    return data


def _read_safetensors(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """The state dict of a safetensors member (a format of raw tensors: reading it cannot run code)."""
    reader = _safetensors()
    try:
        tensors = reader.load(data)
    except Exception as exc:  # the Rust reader raises its own error types; report one line naming the member
        raise LungsegError(f"{source}: cannot read the safetensors weights ({describe(exc)})") from None
    # half-precision weights come back as float32, as read_checkpoint does for a checkpoint
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}
