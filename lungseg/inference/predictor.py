"""A trained network ready to segment slices: :class:`Predictor`.

Modelled on nnU-Net v2's ``nnUNetPredictor``: one object holds the network in eval mode, the
fingerprint that normalises its inputs (eq. 1), the threshold, and the device and precision it runs
at; two constructors build it, :meth:`Predictor.from_run_dir` from a run directory of
:func:`lungseg.training.train` and :meth:`Predictor.from_bundle` from a model ``.zip`` of ``lungseg
export`` (:func:`Predictor.load` picks between them). Its methods turn native slices into tumour
probabilities on their own grid, attention maps, a thresholded mask or a mask refined by the CRF of
eq. (10). Evaluation, prediction, the book and the bench all segment through it, with the one
batched loop of :meth:`Predictor.probabilities`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lungseg.config import TTA_MODES, TrainConfig
from lungseg.device import autocast, resolve_device, resolve_precision
from lungseg.errors import LungsegError
from lungseg.inference.bundle import is_bundle, read_bundle
from lungseg.inference.checks import check_positive_int
from lungseg.inference.tta import check_tta, symmetry, undo_symmetry
from lungseg.rundir import SPLIT_PARTS, RunDir

__all__ = ["Predictor", "Segmentation"]


def _build_network(config: TrainConfig, state: dict[str, Any], source: Any) -> nn.Module:
    """The network ``config`` describes, holding the weights of the checkpoint ``state``."""
    from lungseg.models import build_model

    model = build_model(
        config.model, in_channels=1, out_channels=1, base_channels=config.base_channels,
        depth=config.depth, batch_norm=config.batch_norm,
    )
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise LungsegError(f"{source}: checkpoint does not match {RunDir.CONFIG} ({exc})") from None
    return model


@dataclass
class Segmentation:
    """What :meth:`Predictor.segment` gives for a stack of slices: the mask, probabilities and gate maps."""

    mask: np.ndarray
    probs: np.ndarray
    alphas: list[np.ndarray]


class Predictor:
    """A trained network with what it needs to segment native slices.

    Args:
        model: the network (moved to ``device`` and put in eval mode here).
        config: the run's configuration (network, threshold, depth).
        fingerprint: the intensity fingerprint of eq. (1) (:class:`lungseg.preprocess.Fingerprint`).
        source: the run directory or model ``.zip`` it came from (named in messages and summaries).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"`` (or a resolved
            :class:`torch.device`).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``
            (autocast; on a CPU only with native bf16, about 2x faster there, see
            ``benchmarks/NOTES.md`` for its agreement with fp32).
        epoch: the epoch of the weights.
        split: the run's patient split (``None``: empty parts, as for a model ``.zip``).
        tta: test-time augmentation, ``"none"``, ``"flips"`` or ``"dihedral"``
            (:mod:`lungseg.inference.tta`); ``None``: the run's own (``config.tta``, resolved when it trained).

    Attributes:
        run_dir: ``source`` as a path; config, fingerprint, split, model, epoch as given; tta: the mode used;
        device: the resolved :class:`torch.device`; precision: the resolved ``"fp32"``/``"bf16"``/``"fp16"``.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, fingerprint: Any, source: str | os.PathLike[str],
                 device: str | torch.device = "auto", precision: str = "auto", epoch: int = 0,
                 split: dict[str, list[str]] | None = None, tta: str | None = None) -> None:
        self.tta = config.resolved_tta(fingerprint.image_size) if tta is None else tta
        check_tta(self.tta)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.fingerprint = fingerprint
        self.run_dir = Path(source)
        self.epoch = int(epoch)
        self.split = split if split is not None else {k: [] for k in SPLIT_PARTS}

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike[str], checkpoint: str = "best", device: str = "auto",
                     precision: str = "auto", tta: str | None = None) -> Predictor:
        """The network of a run directory written by :func:`lungseg.training.train`.

        Args:
            run_dir: the run directory.
            checkpoint: ``"best"`` (highest validation Dice) or ``"last"``.
            device: inference device, as for :class:`Predictor`.
            precision: inference numerics, as for :class:`Predictor`.
            tta: test-time augmentation, as for :class:`Predictor`.

        Raises:
            FileNotFoundError: the directory or one of its files is missing.
            LungsegError: the checkpoint name is unknown or the files are inconsistent.
        """
        run = RunDir(run_dir)
        ckpt_path = run.checkpoint_path(checkpoint)
        run.require(run.config_path, run.fingerprint_path, ckpt_path)
        config = run.read_config()
        fingerprint = run.read_fingerprint()
        split = run.read_split(missing_ok=True)
        dev = resolve_device(device)
        numerics = resolve_precision(precision, dev)
        state = run.load_checkpoint(checkpoint)
        model = _build_network(config, state, ckpt_path)
        return cls(model, config, fingerprint, run.path, dev, numerics, int(state.get("epoch", 0)), split, tta)

    @classmethod
    def from_bundle(cls, zip_path: str | os.PathLike[str], device: str = "auto", precision: str = "auto",
                    tta: str | None = None) -> Predictor:
        """The network of a model ``.zip`` written by :func:`lungseg.inference.bundle.export_model`.

        The archive is checked and unpacked in memory by :func:`lungseg.inference.bundle.read_bundle`
        (member names, sizes and SHA-256; weights read with ``weights_only=True``).

        Raises:
            LungsegError: not a lungseg export, an unsafe, missing or altered member.
        """
        bundle = read_bundle(zip_path)
        model = _build_network(bundle.config, bundle.state, bundle.path)
        return cls(model, bundle.config, bundle.fingerprint, bundle.path.resolve(), device, precision,
                   int(bundle.state.get("epoch", 0)), tta=tta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], checkpoint: str = "best", device: str = "auto",
             precision: str = "auto", tta: str | None = None) -> Predictor:
        """:meth:`from_bundle` for a ``.zip``, else :meth:`from_run_dir` (what ``--run``/``--model`` take).

        Raises:
            LungsegError: ``path`` does not exist, or ``checkpoint`` is not ``"best"`` for a model ``.zip``
                (it holds one checkpoint).
        """
        if not os.path.exists(path):
            raise LungsegError(f"{path}: not found; --run/--model takes a run directory or a model .zip of `lungseg export`")
        if is_bundle(path):
            if checkpoint != "best":
                raise LungsegError(f"{path}: an exported model holds one checkpoint; --checkpoint {checkpoint} does not apply")
            return cls.from_bundle(path, device=device, precision=precision, tta=tta)
        return cls.from_run_dir(path, checkpoint=checkpoint, device=device, precision=precision, tta=tta)

    @property
    def threshold(self) -> float:
        """The run's probability threshold."""
        return self.config.threshold

    @property
    def crf_window(self) -> tuple[float, float]:
        """Intensity window the CRF's bilateral term sees: the run's HU window, or [0, 1] for unit data."""
        from lungseg.preprocess import HU_WINDOW

        if self.fingerprint.intensity == "unit":
            return (0.0, 1.0)
        return tuple(self.fingerprint.window or HU_WINDOW)  # type: ignore[return-value]

    def probabilities(self, images: np.ndarray, batch_size: int = 16, progress: bool = False,
                      network_size: tuple[int, int] | None = None,
                      pixel_spacing: tuple[float, float] | None = None) -> np.ndarray:
        """Tumour probabilities of native slices, restored to the native grid (averaged over the
        symmetries of :attr:`tta`).

        Args:
            images: ``(N, H, W)`` slices in HU (or [0, 1] for a "unit" run), native resolution.
            batch_size: slices per forward pass.
            progress: show a tqdm bar over batches.
            network_size: ``None`` (every slice resized to the fingerprint's square input size, as
                in training), or ``(h, w)``: slices resized to that size, at whatever pixel scale it
                gives, and reflect-padded to a multiple of the network's downsampling (the fully
                convolutional network takes any such size; used for crops of a slice).
            pixel_spacing: ``(row, column)`` mm of the slices; for a model whose fingerprint states its
                :attr:`~lungseg.preprocess.Fingerprint.pixel_mm`, the slices are resampled to that pixel
                size instead (:meth:`network_size`).

        Returns:
            float32 probabilities ``(N, H, W)``.
        """
        size = network_size or self.network_size(images.shape[-2:], pixel_spacing)
        return self._run(images, batch_size, progress, size, attention=False)[0]

    def network_size(self, shape: tuple[int, int], pixel_spacing: tuple[float, float] | None) -> tuple[int, int] | None:
        """The size slices of ``shape`` at ``pixel_spacing`` mm are resampled to for a model that states its
        pixel size (the same millimetres per pixel as its training input); ``None`` (resize to the square
        input size) when the model or the slices state none."""
        pixel_mm = self.fingerprint.pixel_mm
        if pixel_mm is None or pixel_spacing is None:
            return None
        return (max(1, round(shape[0] * float(pixel_spacing[0]) / pixel_mm)),
                max(1, round(shape[1] * float(pixel_spacing[1]) / pixel_mm)))

    def attention_maps(self, images: np.ndarray, batch_size: int = 16, progress: bool = False,
                       pixel_spacing: tuple[float, float] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities and the attention coefficients of every gate (eq. 6; an ``"attention"`` model only).
        With test-time augmentation the probabilities are averaged and the gates are those of the slice as given.

        Returns:
            ``(probabilities, alphas)``: float32 ``(N, H, W)`` and a list of ``depth`` arrays
            ``(N, H, W)`` (gate coefficients resized bilinearly to the native grid, deepest gate first).

        Raises:
            LungsegError: the network has no attention gates.
        """
        if self.config.model != "attention":
            raise LungsegError(f"attention maps need an 'attention' model; run {self.run_dir} is {self.config.model!r}")
        return self._run(images, batch_size, progress, self.network_size(images.shape[-2:], pixel_spacing), attention=True)

    def mask(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Binary masks ``(N, H, W)`` uint8: ``probs`` at ``threshold`` (default: the run's)."""
        thr = self.threshold if threshold is None else threshold
        return (probs >= thr).astype(np.uint8)

    def crf_mask(self, images: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Binary masks ``(N, H, W)`` uint8 refined by the dense CRF of eq. (10) on the run's intensity window."""
        from lungseg.crf import refine_batch

        return np.asarray(refine_batch(images, probs, window=self.crf_window), dtype=np.uint8)

    def binarize(self, images: np.ndarray, probs: np.ndarray, crf: bool, threshold: float | None = None) -> np.ndarray:
        """:meth:`crf_mask` when ``crf``, else :meth:`mask` at ``threshold``."""
        return self.crf_mask(images, probs) if crf else self.mask(probs, threshold)

    def segment(self, images: np.ndarray, crf: bool = False, threshold: float | None = None, attention: bool = False,
                batch_size: int = 16, progress: bool = False, pixel_spacing: tuple[float, float] | None = None,
                keep: np.ndarray | None = None) -> Segmentation:
        """The mask of native slices (thresholded, or CRF-refined when ``crf``), with its probabilities
        and, when ``attention``, the gate maps of :meth:`attention_maps` (``pixel_spacing``: see
        :meth:`probabilities`). Where ``keep`` (a boolean array shaped like ``images``) is given, the
        probabilities and gate maps are 0 outside it before thresholding or the CRF, so the CRF takes
        everything outside for background, and the mask is 0 there."""
        if attention:
            probs, alphas = self.attention_maps(images, batch_size=batch_size, progress=progress,
                                                pixel_spacing=pixel_spacing)
        else:
            probs, alphas = self.probabilities(images, batch_size=batch_size, progress=progress,
                                               pixel_spacing=pixel_spacing), []
        return self.segmentation_of(images, probs, alphas, crf, threshold, keep)

    def segmentation_of(self, images: np.ndarray, probs: np.ndarray, alphas: list[np.ndarray], crf: bool = False,
                        threshold: float | None = None, keep: np.ndarray | None = None) -> Segmentation:
        """The :class:`Segmentation` of ``images`` from probabilities already computed (by :meth:`segment`, or by
        :func:`lungseg.inference.planes.three_plane_probabilities`): ``probs`` and ``alphas`` set to 0 outside
        ``keep`` where it is given, then thresholded or CRF-refined (:meth:`binarize`)."""
        if keep is None:
            return Segmentation(self.binarize(images, probs, crf, threshold), probs, alphas)
        probs, alphas = probs * keep, [a * keep for a in alphas]
        return Segmentation(self.binarize(images, probs, crf, threshold) * keep, probs, alphas)

    @torch.no_grad()
    def _run(self, images: np.ndarray, batch_size: int, progress: bool, network_size: tuple[int, int] | None,
             attention: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """The one prediction loop: batches of slices in, probabilities (and gate maps) on the native grid out."""
        from tqdm.auto import tqdm

        from lungseg.preprocess import restore_prediction

        if images.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
        check_positive_int(batch_size, "batch_size")
        n, h, w = images.shape
        prepare = self._prepare_for(network_size)
        probs = np.empty((n, h, w), dtype=np.float32)
        alphas: list[np.ndarray] = []
        for start in tqdm(range(0, n, batch_size), desc="segmenting", unit="batch", disable=not progress):
            batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            x, valid = prepare(batch)
            p, gates = self._forward(torch.from_numpy(x).unsqueeze(1).to(self.device), attention)
            if valid is not None:  # drop the reflect padding
                p = p[:, :, : valid[0], : valid[1]]
            probs[start : start + len(batch)] = restore_prediction(p, (h, w))[:, 0].numpy()
            if gates and not alphas:
                alphas = [np.empty((n, h, w), dtype=np.float32) for _ in gates]
            for level, a in enumerate(gates):
                alphas[level][start : start + len(batch)] = restore_prediction(a.float().cpu(), (h, w))[:, 0].numpy()
        return probs, alphas

    def _forward(self, x: torch.Tensor, attention: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Probabilities (CPU, float32) of a network batch, averaged over the :attr:`tta` symmetries, and
        the gate maps of the batch as given."""
        gates: list[torch.Tensor] = []
        probs = []
        for k in range(TTA_MODES[self.tta]):
            with autocast(self.device, self.precision):
                if attention and k == 0:
                    logits, gates = self.model(x, return_attention=True)
                else:
                    logits = self.model(symmetry(x, k))
            probs.append(undo_symmetry(torch.sigmoid(logits.float()), k))
        return torch.stack(probs).mean(0).cpu(), gates

    def _prepare_for(self, network_size: tuple[int, int] | None) -> Any:
        """``batch -> (network input (B, h', w'), None or the (h, w) of it that is image, not padding)``."""
        from lungseg.preprocess import normalize, preprocess_slices, resize_image

        if network_size is None:
            return lambda batch: (preprocess_slices(batch, self.fingerprint), None)
        out_h, out_w = network_size
        multiple = 2 ** int(self.config.depth)
        pad = ((0, 0), (0, (-out_h) % multiple), (0, (-out_w) % multiple))
        return lambda batch: (np.ascontiguousarray(np.pad(resize_image(normalize(batch, self.fingerprint), network_size),
                                                          pad, mode="reflect")), network_size)
