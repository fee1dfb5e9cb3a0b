"""The run directory: the one place that knows which files a training run consists of.

A run directory holds everything needed to reproduce, resume, evaluate and deploy a model::

    config.json                 the resolved TrainConfig
    fingerprint.json            the normalisation statistics (eq. 1), from the training split only
    split.json                  the patient-level train/val/test split
    history.csv                 one row per epoch: training loss, validation Dice, learning rate, time
    last.pt                     model + optimiser + scheduler + RNG states + epoch (for resuming)
    best.pt                     the weights with the best validation Dice
    metrics.json                the training summary; ``"finished": true`` once training ended
    provenance.json             git commit, package versions, device
    eval_crf_{off,on}.json      evaluations of the experiment grid (CRF off / on), each with
    eval_crf_{off,on}_per_image.csv.gz
                                its per-image table (gzip-compressed CSV)
    MODEL_CARD.md               what a published model is for and how it scored (the best attention
                                run of a published profile, written by scripts/run_profile.py)
    folds.json                  a cross-validated run's folds and their training configuration (it
                                holds evaluations only: lungseg.experiment.realct)
    .lock                       locked (``fcntl.flock``) by the process training in the folder

Every other module asks :class:`RunDir` for these paths and contents; no other module spells a
file name. Every write is atomic (:mod:`lungseg.files`), so a killed process never leaves a
half-written file, and checkpoints are read by the one function :func:`read_checkpoint` (behind
:meth:`RunDir.load_checkpoint`). One process at a time trains in a run folder (:meth:`RunDir.lock`),
and a folder holding anything but a run is never trained into (:meth:`RunDir.refuse_foreign`).
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.files import atomic_write_bytes, atomic_write_text, read_csv, write_csv, write_json
from lungseg.paths import Folder, localize, portable

__all__ = ["CHECKPOINTS", "HISTORY_COLUMNS", "RunDir", "RunLock", "parse_config", "per_image_csv_path", "read_checkpoint"]

#: Checkpoint names: ``"best"`` (highest validation Dice) and ``"last"`` (end of the latest epoch).
CHECKPOINTS: tuple[str, ...] = ("best", "last")
#: Columns of the history file, one row per epoch.
HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_dice", "lr", "time_s")
SPLIT_PARTS: tuple[str, ...] = ("train", "val", "test")
#: The split file's key of the patients' content hashes (the data's fingerprint).
CONTENT_KEY = "content_sha256"
#: TrainConfig fields that name a folder or file: written by :func:`lungseg.paths.portable`, read by ``localize``.
_PATH_FIELDS: tuple[str, ...] = ("data", "cache_dir", "init_weights")


def per_image_csv_path(evaluation_json: str | os.PathLike[str]) -> Path:
    """The per-image table written beside an evaluation JSON (``metrics.json`` → ``metrics_per_image.csv.gz``):
    gzip-compressed CSV, which pandas, R and ``zcat`` read as it is, at a fifth of the size."""
    p = Path(evaluation_json)
    stem = p.name[: -len(".json")] if p.name.endswith(".json") else p.name
    return p.with_name(f"{stem}_per_image.csv.gz")


def parse_config(data: str | bytes, source: str | os.PathLike[str]) -> TrainConfig:
    """A run's configuration from the text of its config file (``source`` names it in errors).

    A field a run saved before it existed reads as what that run did, not as today's default
    (:func:`lungseg.config.upgrade_config`: e.g. a missing ``patch_size`` as ``None``, whole slices;
    a missing ``flip_ud`` as 0).

    Raises:
        LungsegError: not valid JSON, an unknown field or a value of the wrong type.
    """
    try:
        saved = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LungsegError(f"{source}: not valid JSON ({exc})") from None
    return TrainConfig.from_dict(saved, saved_run=True)


def read_checkpoint(file: str | os.PathLike[str] | io.BytesIO, source: str | os.PathLike[str]) -> dict[str, Any]:
    """The one reader of checkpoints: a file (or the bytes of a model ``.zip``'s member), tensors on the CPU.

    It reads with ``torch.load(..., weights_only=True)``: tensors and plain Python types only, so a
    checkpoint someone shares cannot run code when it is loaded (a pickle that names any other
    object is refused). Weights published in half precision come back as float32.

    Raises:
        LungsegError: the data cannot be read as a checkpoint (the message names ``source``).
    """
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or unsafe file can raise many types; report it as one line
        first = " ".join(str(exc).split())[:300]
        raise LungsegError(
            f"{source}: cannot read checkpoint safely ({type(exc).__name__}: {first}); lungseg loads checkpoints"
            " with weights_only=True, which refuses files that could run code"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise LungsegError(f"{source}: not a lungseg checkpoint (no 'model' weights)")
    state["model"] = {k: v.float() if torch.is_tensor(v) and v.dtype == torch.float16 else v
                      for k, v in state["model"].items()}
    return state


class RunLock:
    """An exclusive :func:`fcntl.flock` on a run folder's lock file, held until :meth:`release`.

    The kernel drops the lock when the process ends, however it ends, so a killed training never
    leaves a folder locked. The file holds the owner's process id, for the message of a refused one.

    Raises:
        LungsegError: another process holds the lock (the message names the folder and that process).
    """

    def __init__(self, path: Path, folder: Path) -> None:
        self._fh: Any = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open until release())
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            owner = self._fh.read().strip() or "unknown"
            self._fh.close()
            raise LungsegError(
                f"{folder}: another process (pid {owner}) is training in this run folder; wait for it to end,"
                " or choose another --out"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        """Unlock (closing the file releases the flock); a second call does nothing."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunDir(Folder):
    """A training run's folder and its files.

    Args:
        path: the folder (it need not exist yet).
    """

    CONFIG = "config.json"
    FINGERPRINT = "fingerprint.json"
    SPLIT = "split.json"
    HISTORY = "history.csv"
    METRICS = "metrics.json"
    PROVENANCE = "provenance.json"
    MODEL_CARD = "MODEL_CARD.md"
    FOLDS = "folds.json"
    LOCK = ".lock"

    # ---------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def fingerprint_path(self) -> Path:
        return self.path / self.FINGERPRINT

    @property
    def split_path(self) -> Path:
        return self.path / self.SPLIT

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def provenance_path(self) -> Path:
        return self.path / self.PROVENANCE

    @property
    def model_card_path(self) -> Path:
        return self.path / self.MODEL_CARD

    @property
    def folds_path(self) -> Path:
        """A cross-validated run's record of its folds' configuration (:mod:`lungseg.experiment.realct`),
        which holds evaluations but no network."""
        return self.path / self.FOLDS

    def checkpoint_path(self, which: str = "best") -> Path:
        """``best.pt`` or ``last.pt``.

        Raises:
            LungsegError: ``which`` is not one of :data:`CHECKPOINTS`.
        """
        if which not in CHECKPOINTS:
            raise LungsegError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}")
        return self.path / f"{which}.pt"

    def evaluation_path(self, crf: bool) -> Path:
        """Where the experiment grid keeps this run's test evaluation with the CRF off or on."""
        return self.path / f"eval_crf_{'on' if crf else 'off'}.json"

    def per_image_path(self, crf: bool) -> Path:
        """The per-image CSV beside :meth:`evaluation_path`."""
        return per_image_csv_path(self.evaluation_path(crf))

    def per_image_file(self, crf: bool) -> Path | None:
        """The per-image table on disk: :meth:`per_image_path`, else the plain ``.csv`` a run evaluated before
        the tables were compressed keeps; ``None`` when there is neither."""
        path = self.per_image_path(crf)
        for candidate in (path, path.with_suffix("")):
            if candidate.is_file():
                return candidate
        return None

    def published_files(self) -> list[Path]:
        """The small files that describe a finished run (no checkpoints): what a results folder publishes."""
        names = [self.CONFIG, self.METRICS, self.HISTORY, self.SPLIT, self.FINGERPRINT, self.PROVENANCE]
        paths = [self.path / n for n in names]
        for crf in (False, True):
            # an older run's plain .csv where it has one: publishing must not drop the table its evaluation names
            paths += [self.evaluation_path(crf), self.per_image_file(crf) or self.per_image_path(crf)]
        return paths

    # ---------------------------------------------------------------- state
    def has_checkpoint(self, which: str = "last") -> bool:
        return self.checkpoint_path(which).is_file()

    def holds_run(self) -> bool:
        """True once training has saved a checkpoint here."""
        return any(self.has_checkpoint(which) for which in CHECKPOINTS)

    def is_finished(self) -> bool:
        """True when training ended (its summary says so) and the best weights exist."""
        if not (self.metrics_path.is_file() and self.config_path.is_file() and self.has_checkpoint("best")):
            return False
        try:
            return bool(json.loads(self.metrics_path.read_text()).get("finished", False))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return False

    def evaluation_is_fresh(self, crf: bool) -> bool:
        """True when the stored evaluation was made with the current best weights (same epoch).

        The epoch, not the file times, decides: a fresh clone gives every file the same checkout time."""
        path = self.evaluation_path(crf)
        if not (path.is_file() and self.has_checkpoint("best")):
            return False
        try:
            record = json.loads(path.read_text())
            evaluated = record.get("checkpoint_epoch")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return False
        if record.get("crf") != bool(crf) or record.get("checkpoint") != "best" or record.get("split") != "test":
            return False
        return evaluated is not None and int(evaluated) == int(self.load_checkpoint("best").get("epoch", -1))

    def require(self, *paths: Path) -> None:
        """Raise :class:`FileNotFoundError` naming the first of ``paths`` that is missing."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: run directory not found")
        for needed in paths:
            if not needed.is_file():
                raise FileNotFoundError(
                    f"{needed}: missing from the run directory (is {self.path} a finished `lungseg train` run?)"
                )

    # ---------------------------------------------------------------- reading and writing
    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def _own_files(self) -> list[Path]:
        return self.published_files() + [self.checkpoint_path(w) for w in CHECKPOINTS]

    def _partial_files(self) -> list[Path]:
        """The temporary files (``.<name>.tmp<pid>``) of this run's own files."""
        names = {p.name for p in self._own_files()}
        return [p for p in self.path.glob(".*.tmp*") if p.is_file()
                and p.name[1:].rsplit(".tmp", 1)[0] in names and p.name.rsplit(".tmp", 1)[1].isdigit()]

    def remove_partial_files(self) -> list[Path]:
        """Delete the temporary files a killed process left behind for this run's own files
        (``.<name>.tmp<pid>``; every write is atomic, so such a file is never a complete one)."""
        partial = self._partial_files()
        for p in partial:
            p.unlink()
        return partial

    def refuse_foreign(self) -> None:
        """Refuse a folder that exists, is not empty and holds no run (no configuration file): training
        into it would mix a run's files with someone else's (or replace them: ``config.json``, ...).

        Raises:
            LungsegError: the folder is a file, or holds files but no run.
        """
        if self.path.exists() and not self.path.is_dir():
            raise LungsegError(f"{self.path}: is a file, not a run folder; choose a new or empty folder")
        if not self.path.is_dir() or self.config_path.is_file():
            return
        own = {self.path / self.LOCK, *self._partial_files()}
        other = sorted(p.name for p in self.path.iterdir() if p not in own)
        if other:
            raise LungsegError(
                f"{self.path}: holds {len(other)} file(s) ({', '.join(other[:3])}) but no lungseg run; train into a"
                " new or empty folder"
            )

    def lock(self) -> RunLock:
        """Lock the folder (creating it) for the calling process: one training at a time per run folder.

        Returns:
            The held :class:`RunLock` (release it, or use it as a context manager).

        Raises:
            LungsegError: another process is training here.
        """
        self.create()
        return RunLock(self.path / self.LOCK, self.path)

    def remove_results(self) -> None:
        """Delete what an earlier attempt left (checkpoints, history, summary, evaluations) before a
        fresh start, so that none of it can pass for the new run's results."""
        for path in self._own_files():
            if path.name not in (self.CONFIG, self.FINGERPRINT, self.SPLIT) and path.is_file():
                path.unlink()

    def write_config(self, config: TrainConfig) -> Path:
        # the data and cache folders relative to the repository: a published config names no machine's folders
        dataclasses.replace(config, **{name: portable(value) for name in _PATH_FIELDS
                                       if (value := getattr(config, name))}).to_json(self.config_path)
        return self.config_path

    def read_config(self) -> TrainConfig:
        """The run's configuration (:func:`parse_config` of its file), its data and cache folders as
        folders of this machine (recorded relative to the repository, or absolute by older runs)."""
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.config_path}: training config not found")
        config = parse_config(self.config_path.read_bytes(), self.config_path)
        for name in _PATH_FIELDS:
            if value := getattr(config, name):
                setattr(config, name, str(localize(value, self.path)))
        return config

    def write_fingerprint(self, fingerprint: Any) -> Path:
        return fingerprint.to_json(self.fingerprint_path)

    def read_fingerprint(self) -> Any:
        from lungseg.preprocess import Fingerprint

        return Fingerprint.from_json(self.fingerprint_path)

    def write_split(self, split: dict[str, Sequence[str]], *, seed: int, fractions: Sequence[float], data: str,
                    content: dict[str, str] | None = None) -> Path:
        """The patient-level split, with the seed, fractions and dataset it was drawn from.

        Args:
            split: ``{"train": [...], "val": [...], "test": [...]}`` patient ids.
            seed: the split's seed.
            fractions: train/val/test fractions.
            data: the dataset's path.
            content: ``{patient id: content hash}`` of the split's patients
                (:meth:`lungseg.data.CTDataset.content_hash`): what resuming and evaluation compare
                to recognise the data, whatever its path or ids.
        """
        record = {**{k: list(split[k]) for k in SPLIT_PARTS}, "seed": int(seed),
                  "fractions": [float(f) for f in fractions], "data": portable(data) if data else str(data)}
        if content is not None:
            record[CONTENT_KEY] = {str(k): str(v) for k, v in content.items()}
        return atomic_write_text(self.split_path, json.dumps(record, indent=2) + "\n")

    def read_content_hashes(self) -> dict[str, str] | None:
        """``{patient id: content hash}`` of the split's patients, ``None`` for a run saved before
        lungseg recorded them (or without a split file)."""
        if not self.split_path.is_file():
            return None
        try:
            hashes = json.loads(self.split_path.read_text()).get(CONTENT_KEY)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise LungsegError(f"{self.split_path}: not a valid split record ({exc})") from None
        if hashes is None:
            return None
        if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
            raise LungsegError(f"{self.split_path}: {CONTENT_KEY!r} must map patient ids to content hashes")
        return {str(k): v for k, v in hashes.items()}

    def read_split(self, missing_ok: bool = False) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}`` patient ids.

        Args:
            missing_ok: return empty parts instead of raising when the file does not exist.
        """
        if not self.split_path.is_file():
            if missing_ok:
                return {k: [] for k in SPLIT_PARTS}
            raise FileNotFoundError(f"{self.split_path}: missing from the run directory")
        try:
            record = json.loads(self.split_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LungsegError(f"{self.split_path}: not valid JSON ({exc})") from None
        return {k: [str(p) for p in record.get(k, [])] for k in SPLIT_PARTS}

    def write_history(self, history: Sequence[dict[str, float]]) -> Path:
        return write_csv(self.history_path, [{k: row[k] for k in HISTORY_COLUMNS} for row in history], HISTORY_COLUMNS)

    def read_history(self) -> list[dict[str, float]]:
        """The per-epoch rows of the history file (numbers as floats, ``epoch`` as int)."""
        with open(self.history_path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]

    def write_metrics(self, summary: dict[str, Any]) -> Path:
        return write_json(summary, self.metrics_path)

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_path.read_text())

    def write_provenance(self, record: dict[str, Any]) -> Path:
        return write_json(record, self.provenance_path)

    def read_evaluation(self, crf: bool) -> dict[str, Any]:
        return json.loads(self.evaluation_path(crf).read_text())

    def read_per_image(self, crf: bool) -> list[dict[str, str]] | None:
        """The rows of the per-image table beside :meth:`evaluation_path` (``None`` where there is none)."""
        path = self.per_image_file(crf)
        return None if path is None else read_csv(path)

    def save_checkpoint(self, which: str, state: dict[str, Any]) -> Path:
        """:func:`torch.save` of ``state`` as ``which`` (``"best"``/``"last"``), never leaving a partial file."""
        buf = io.BytesIO()
        torch.save(state, buf)
        return atomic_write_bytes(self.checkpoint_path(which), buf.getvalue())

    def load_checkpoint(self, which: str = "best") -> dict[str, Any]:
        """The one function that reads this run's checkpoints (tensors mapped to the CPU).

        The file is read with ``torch.load(..., weights_only=True)``: tensors and plain Python
        types only, so a checkpoint someone shares cannot run code when it is loaded (a pickle
        that names any other object is refused). Weights published in half precision
        (:meth:`compact_checkpoint`) come back as float32.

        Raises:
            FileNotFoundError: the checkpoint does not exist.
            LungsegError: the file cannot be read as a checkpoint (the message names it).
        """
        path = self.checkpoint_path(which)
        self.require(path)
        return read_checkpoint(path, path)

    def compact_checkpoint(self, which: str = "best") -> Path:
        """Rewrite a checkpoint with its floating-point weights in half precision and nothing else
        but its epoch, validation Dice and configuration (for publishing small runs); absolute paths
        in the configuration are recorded as :func:`lungseg.paths.portable` records them, so that a
        published checkpoint names no folder of the machine that trained it."""
        from lungseg.paths import portable

        state = self.load_checkpoint(which)
        weights = {k: v.half() if torch.is_floating_point(v) else v for k, v in state["model"].items()}
        keep = {k: state[k] for k in ("epoch", "val_dice", "config") if k in state}
        if isinstance(keep.get("config"), dict):
            keep["config"] = {k: portable(v) if isinstance(v, str) and os.path.isabs(v) else v
                              for k, v in keep["config"].items()}
        return self.save_checkpoint(which, {"model": weights, **keep, "weights_dtype": "float16"})
