"""Matplotlib figures for the book: CT slices in a HU window, mask contours, attention overlays,
montages of slices with filled mask overlays (``torchvision.utils.make_grid`` and
``draw_segmentation_masks``), HU histograms, metric bars with confidence intervals, learning curves
and the Figure-2 grid. The seaborn figures of the statistics are in :mod:`lungseg.plots`.

Every function takes plain arrays (slices ``(H, W)``, HU or unit intensities) and returns the
:class:`matplotlib.figure.Figure` it drew on (or draws into a given ``ax``), so the notebooks stay
free of plotting logic and the figures look the same in every chapter. Nothing here computes a
metric: values come from :mod:`lungseg.metrics` and the run folders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torchvision.utils import draw_segmentation_masks, make_grid

__all__ = [
    "metric_order",
    "DISPLAY_WINDOWS",
    "COLORS",
    "MODEL_LABELS",
    "window_limits",
    "grey_levels",
    "show_ct",
    "add_contours",
    "show_slice",
    "overlay_attention",
    "overlay_masks",
    "montage",
    "attention_panel",
    "hu_histograms",
    "image_row",
    "figure2_grid",
    "worst_cases_gallery",
]

#: Display windows as (low, high) HU. ``"paper"`` is the clipping window of eq. (1)
#: (:data:`lungseg.preprocess.HU_WINDOW`); the others are the usual radiology presets
#: (lung W1500/L-600, mediastinum W400/L40, bone W1800/L400).
DISPLAY_WINDOWS: dict[str, tuple[float, float]] = {
    "paper": (-1000.0, 400.0),
    "lung": (-1350.0, 150.0),
    "mediastinum": (-160.0, 240.0),
    "bone": (-500.0, 1300.0),
}

#: One colour per role, used in every chapter (colour-blind safe Okabe-Ito hues).
COLORS: dict[str, str] = {
    "gt": "#009E73",  # ground truth: green
    "unet": "#E69F00",  # U-Net: orange
    "attention": "#CC79A7",  # Attention Res-U-Net: purple
    "crf": "#56B4E9",  # after CRF: sky blue
    "paper": "#000000",  # the paper's printed numbers: black
}

#: How the models are named in legends and titles.
MODEL_LABELS: dict[str, str] = {"unet": "U-Net", "attention": "Attention Res-U-Net"}


def _check_2d(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D slice (H, W), got shape {arr.shape}")
    return arr


def window_limits(window: str | tuple[float, float] | None, image: np.ndarray | None = None) -> tuple[float, float]:
    """``(vmin, vmax)`` for ``imshow``.

    Args:
        window: a name of :data:`DISPLAY_WINDOWS`, an explicit ``(low, high)`` in HU, or ``None``
            for the image's own 1st-99th percentile range (unit intensities, normalised slices).
        image: needed when ``window`` is ``None``.
    """
    if window is None:
        if image is None:
            raise ValueError("window=None needs the image to take percentiles from")
        finite = np.asarray(image, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return 0.0, 1.0
        lo, hi = np.percentile(finite, [1, 99])
        return float(lo), float(hi if hi > lo else lo + 1.0)
    if isinstance(window, str):
        if window not in DISPLAY_WINDOWS:
            raise ValueError(f"window must be one of {sorted(DISPLAY_WINDOWS)} or (low, high), got {window!r}")
        return DISPLAY_WINDOWS[window]
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise ValueError(f"window (low, high) needs high > low, got {window}")
    return lo, hi


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax  # type: ignore[return-value]


def show_ct(image: np.ndarray, ax: Axes | None = None, window: str | tuple[float, float] | None = "lung",
            title: str | None = None, colorbar: bool = False) -> Figure:
    """A CT slice ``(H, W)`` in grey levels clipped to a display window (HU).

    The display window only changes what is seen; it is not the preprocessing of eq. (1).
    """
    img = _check_2d("image", image)
    fig, ax = _axes(ax)
    vmin, vmax = window_limits(window, img)
    im = ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="HU" if window is not None else None)
    return fig


def add_contours(ax: Axes, mask: np.ndarray, color: str, label: str | None = None,
                 linewidth: float = 1.2, linestyle: str = "-") -> None:
    """Draw the outline of a binary mask ``(H, W)`` on ``ax`` (nothing when the mask is empty).

    ``label`` adds a legend proxy line so contours can be named in a legend."""
    m = _check_2d("mask", mask)
    if m.any():
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=linewidth,
                   linestyles=linestyle)
    if label is not None:
        handles = list(getattr(ax, "_lungseg_handles", []))
        handles.append(Line2D([0], [0], color=color, lw=linewidth, ls=linestyle, label=label))
        ax._lungseg_handles = handles  # type: ignore[attr-defined]


def _legend(ax: Axes, **kw: Any) -> None:
    handles = getattr(ax, "_lungseg_handles", [])
    if handles:
        ax.legend(handles=handles, loc=kw.pop("loc", "lower right"), fontsize=kw.pop("fontsize", 7),
                  framealpha=0.7, **kw)


def show_slice(image: np.ndarray, gt: np.ndarray | None = None, pred: Mapping[str, np.ndarray] | np.ndarray | None = None,
               ax: Axes | None = None, window: str | tuple[float, float] | None = "lung",
               title: str | None = None, legend: bool = True) -> Figure:
    """A CT slice with the ground-truth contour (green) and one or more predicted contours.

    Args:
        image: ``(H, W)`` slice.
        gt: ``(H, W)`` binary ground truth, or ``None``.
        pred: a binary ``(H, W)`` prediction, or ``{name: mask}``; names ``"unet"``,
            ``"attention"`` and ``"crf"`` get their colours from :data:`COLORS`.
    """
    img = _check_2d("image", image)
    fig = show_ct(img, ax=ax, window=window, title=title)
    ax = ax or fig.axes[0]
    if gt is not None:
        _same_shape("gt", gt, img)
        add_contours(ax, np.asarray(gt) > 0, COLORS["gt"], label="ground truth")
    if pred is not None:
        preds = {"prediction": pred} if not isinstance(pred, Mapping) else dict(pred)
        fallback = iter(["#D55E00", "#0072B2", "#F0E442"])
        for name, m in preds.items():
            _same_shape(f"pred[{name!r}]", m, img)
            color = COLORS.get(name) or next(fallback)
            add_contours(ax, np.asarray(m) > 0, color, label=MODEL_LABELS.get(name, name), linestyle="--")
    if legend:
        _legend(ax)
    return fig


def _same_shape(name: str, a: Any, ref: np.ndarray) -> None:
    if np.shape(a) != ref.shape:
        raise ValueError(f"{name} must have the image's shape {ref.shape}, got {np.shape(a)}")


def grey_levels(image: np.ndarray, window: str | tuple[float, float] | None) -> np.ndarray:
    """A slice (or stack of slices) mapped through its display window to uint8 grey levels 0..255
    (what :func:`show_ct` displays)."""
    lo, hi = window_limits(window, image)
    scaled = (np.clip(np.nan_to_num(image.astype(np.float64), nan=lo), lo, hi) - lo) * (255.0 / (hi - lo))
    return np.rint(scaled).astype(np.uint8)


def overlay_masks(image: np.ndarray, masks: Mapping[str, np.ndarray] | np.ndarray | None = None,
                  window: str | tuple[float, float] | None = "lung", opacity: float = 0.45) -> np.ndarray:
    """An RGB picture ``(H, W, 3)`` uint8 of a slice in its display window with binary masks filled
    in colour (:func:`torchvision.utils.draw_segmentation_masks`).

    Args:
        image: ``(H, W)`` slice (HU, or unit intensities with ``window=None``).
        masks: a binary ``(H, W)`` mask (drawn as the ground truth) or ``{name: mask}``; names of
            :data:`COLORS` (``"gt"``, ``"unet"``, ``"attention"``, ``"crf"``) get their colour.
        window: the display window (:func:`window_limits`).
        opacity: the fill's opacity in [0, 1].

    Raises:
        ValueError: a mask of another shape than the image, or ``opacity`` outside [0, 1].
    """
    img = _check_2d("image", image)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    grey = torch.from_numpy(grey_levels(img, window)).expand(3, *img.shape).contiguous()
    named = {} if masks is None else {"gt": masks} if not isinstance(masks, Mapping) else dict(masks)
    if not named:
        return grey.permute(1, 2, 0).numpy().copy()
    fallback = iter(["#D55E00", "#0072B2", "#F0E442", "#999999"] * 4)
    stack = []
    for name, m in named.items():
        _same_shape(f"masks[{name!r}]", m, img)
        stack.append(torch.from_numpy(np.asarray(m) > 0))
    colors = [COLORS.get(name) or next(fallback) for name in named]
    drawn = draw_segmentation_masks(grey, torch.stack(stack), alpha=opacity, colors=colors)
    return drawn.permute(1, 2, 0).numpy().copy()


def montage(images: Sequence[np.ndarray], masks: Sequence[Mapping[str, np.ndarray] | np.ndarray | None] | None = None,
            titles: Sequence[str] | None = None, window: str | tuple[float, float] | None = "lung",
            ncols: int = 4, opacity: float = 0.45, tile_inches: float = 2.4,
            windows: Sequence[str | tuple[float, float] | None] | None = None) -> Figure:
    """Slices tiled in one picture (:func:`torchvision.utils.make_grid`), each with its masks filled
    in colour (:func:`overlay_masks`) and an optional title over its tile.

    Args:
        images: ``(H, W)`` slices of one shape.
        masks: per slice, a binary mask, ``{name: mask}`` or ``None``; ``None`` for no overlay.
        titles: one per slice.
        window: the display window of every slice.
        ncols: tiles per row.
        windows: one display window per slice, in place of ``window``.
        opacity: the fill's opacity.
        tile_inches: the size of one tile in the figure.

    Raises:
        ValueError: no images, slices of different shapes, or ``masks``/``titles`` of another length.
    """
    n = len(images)
    if n == 0:
        raise ValueError("images is empty")
    if masks is not None and len(masks) != n:
        raise ValueError(f"need one masks entry per image, got {len(masks)} for {n} images")
    if titles is not None and len(titles) != n:
        raise ValueError(f"need one title per image, got {len(titles)} for {n} images")
    if windows is not None and len(windows) != n:
        raise ValueError(f"need one window per image, got {len(windows)} for {n} images")
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols}")
    shape = _check_2d("images[0]", images[0]).shape
    tiles = []
    for i, img in enumerate(images):
        _same_shape(f"images[{i}]", _check_2d(f"images[{i}]", img), np.empty(shape))
        rgb = overlay_masks(np.asarray(img), None if masks is None else masks[i],
                            window=window if windows is None else windows[i], opacity=opacity)
        tiles.append(torch.from_numpy(rgb).permute(2, 0, 1))
    # a white band above each tile holds its title (make_grid pads every side alike)
    band = max(12, shape[0] // 6) if titles is not None else 0
    if band:
        tiles = [torch.cat([torch.full((3, band, shape[1]), 255, dtype=torch.uint8), t], dim=1) for t in tiles]
    ncols = min(int(ncols), n)
    padding = max(2, shape[1] // 64)
    grid = make_grid(torch.stack(tiles), nrow=ncols, padding=padding, pad_value=255)
    nrows = -(-n // ncols)
    h, w = shape[0] + band, shape[1]
    fig, ax = plt.subplots(figsize=(tile_inches * ncols, tile_inches * nrows * h / w))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    if titles is not None:
        for i, t in enumerate(titles):
            r, c = divmod(i, ncols)
            ax.text(padding + c * (w + padding) + w / 2, padding + r * (h + padding) + band * 0.9, t,
                    ha="center", va="bottom", fontsize=7)
    names: list[str] = []
    for entry in masks or []:
        if entry is not None:
            names += [k for k in (entry if isinstance(entry, Mapping) else {"gt": entry}) if k not in names]
    if names:
        from matplotlib.patches import Patch

        fallback = iter(["#D55E00", "#0072B2", "#F0E442", "#999999"] * 4)
        handles = [Patch(color=COLORS.get(k) or next(fallback), alpha=opacity,
                         label={"gt": "ground truth"}.get(k, MODEL_LABELS.get(k, k))) for k in names]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    return fig


def overlay_attention(image: np.ndarray, alpha: np.ndarray, ax: Axes | None = None,
                      window: str | tuple[float, float] | None = "lung", gt: np.ndarray | None = None,
                      title: str | None = None, opacity: float = 0.5, colorbar: bool = False) -> Figure:
    """Attention coefficients ``alpha`` ``(h, w)`` in [0, 1] of one gate (eq. 6) over a CT slice ``(H, W)``.

    A coarse gate map is drawn stretched over the slice's extent (each coefficient covers the
    ``H/h x W/w`` pixels it gates), so nothing is interpolated that the network did not compute.
    """
    img = _check_2d("image", image)
    a = _check_2d("alpha", alpha).astype(np.float32)
    if np.isnan(a).any():
        raise ValueError("alpha contains NaN")
    fig = show_ct(img, ax=ax, window=window, title=title)
    ax = ax or fig.axes[0]
    h, w = img.shape
    im = ax.imshow(a, cmap="inferno", vmin=0.0, vmax=1.0, alpha=opacity, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                   interpolation="nearest")
    if gt is not None:
        _same_shape("gt", gt, img)
        add_contours(ax, np.asarray(gt) > 0, COLORS["gt"], linewidth=1.0)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="attention coefficient")
    return fig


def attention_panel(image: np.ndarray, alphas: Sequence[np.ndarray], gt: np.ndarray | None = None,
                    window: str | tuple[float, float] | None = "lung", title: str | None = None) -> Figure:
    """One row: the slice with its ground truth, then every gate's coefficients from deepest to
    shallowest (the order of ``AttentionResUNet(..., return_attention=True)``)."""
    if len(alphas) == 0:
        raise ValueError("alphas is empty: pass the list returned with return_attention=True")
    n = len(alphas) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.6))
    show_slice(image, gt=gt, ax=axes[0], window=window, title="CT + ground truth", legend=False)
    for i, (ax, a) in enumerate(zip(axes[1:], alphas)):
        a2 = np.asarray(a).squeeze()
        overlay_attention(image, a2, ax=ax, window=window, gt=gt,
                          title=f"gate {i + 1} ({a2.shape[0]}x{a2.shape[1]})")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def hu_histograms(samples: Mapping[str, np.ndarray], ax: Axes | None = None, bins: int = 120,
                  hu_range: tuple[float, float] = (-1100.0, 1200.0), window: tuple[float, float] | None = (-1000.0, 400.0),
                  log: bool = True) -> Figure:
    """Normalised histograms of HU values per tissue, with the eq. (1) clipping window shaded.

    Args:
        samples: ``{tissue name: 1D array of HU values}`` (e.g. voxels under each label).
        window: the preprocessing window to shade, or ``None``.
        log: logarithmic counts (tumour voxels are rare next to lung and air).
    """
    if not samples:
        raise ValueError("samples is empty: pass {tissue: HU values}")
    fig, ax = _axes(ax, figsize=(8.0, 3.6))
    edges = np.linspace(hu_range[0], hu_range[1], bins + 1)
    for name, values in samples.items():
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            continue
        ax.hist(v, bins=edges, density=True, histtype="step", lw=1.5, label=f"{name} (n={v.size:,})",
                color=COLORS.get(name))
    if window is not None:
        ax.axvspan(window[0], window[1], color="0.85", zorder=0, label=f"window {window[0]:g}..{window[1]:g} HU")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("Hounsfield units")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def image_row(images: Sequence[np.ndarray], titles: Sequence[str], windows: Sequence[Any] | None = None,
              colorbar: bool = True, cmap: str = "gray") -> Figure:
    """Slices side by side (e.g. before/after a preprocessing step), each with its own window
    (a :data:`DISPLAY_WINDOWS` name, ``(low, high)``, or ``None`` for its percentile range)."""
    if len(images) == 0 or len(images) != len(titles):
        raise ValueError(f"need as many titles as images, got {len(images)} images and {len(titles)} titles")
    windows = list(windows) if windows is not None else [None] * len(images)
    if len(windows) != len(images):
        raise ValueError(f"need one window per image, got {len(windows)} for {len(images)} images")
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.2), squeeze=False)
    for ax, img, t, w in zip(axes[0], images, titles, windows):
        arr = _check_2d("image", img)
        vmin, vmax = window_limits(w, arr)
        im = ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{t}\n{arr.shape[0]}x{arr.shape[1]}", fontsize=8)
        ax.set_axis_off()
        if colorbar:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def metric_order(values: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The metrics of ``{model: {metric: value}}`` in first-seen order over the models (the x axis of
    :func:`lungseg.plots.figure3`)."""
    metrics: list[str] = []
    for per_model in values.values():
        metrics += [k for k in per_model if k not in metrics]
    return metrics


def figure2_grid(images: Sequence[np.ndarray], gts: Sequence[np.ndarray], preds: Mapping[str, Sequence[np.ndarray]],
                 row_titles: Sequence[str] | None = None, window: str | tuple[float, float] | None = "lung",
                 crop: int | None = None) -> Figure:
    """The paper's Figure 2: one row per case, columns CT | ground truth | each model's prediction.

    Args:
        images: slices ``(H, W)``.
        gts: binary ground truths, one per slice.
        preds: ``{model name: [binary mask per slice]}``, in column order.
        row_titles: e.g. the tumour size and location of each case.
        crop: half-width in pixels of a square crop centred on the ground truth (small tumours
            vanish at full size); ``None`` shows the whole slice.
    """
    n = len(images)
    if n == 0 or len(gts) != n or any(len(p) != n for p in preds.values()):
        raise ValueError(f"images, gts and every preds list need the same non-zero length; got {n}, {len(gts)}, "
                         f"{ {k: len(v) for k, v in preds.items()} }")
    cols = 2 + len(preds)
    fig, axes = plt.subplots(n, cols, figsize=(2.3 * cols, 2.3 * n), squeeze=False)
    for r in range(n):
        img = _check_2d("image", images[r])
        gt = np.asarray(gts[r]) > 0
        _same_shape("gt", gt, img)
        sl = _crop_slices(gt, crop, img.shape)
        show_ct(img[sl], ax=axes[r][0], window=window, title="CT" if r == 0 else None)
        show_slice(img[sl], gt=gt[sl], ax=axes[r][1], window=window, title="ground truth" if r == 0 else None,
                   legend=False)
        for c, (name, masks) in enumerate(preds.items(), start=2):
            m = np.asarray(masks[r]) > 0
            _same_shape(f"preds[{name!r}][{r}]", m, img)
            show_slice(img[sl], gt=gt[sl], pred={name: m[sl]}, ax=axes[r][c], window=window,
                       title=MODEL_LABELS.get(name, name) if r == 0 else None, legend=False)
        if row_titles is not None:
            axes[r][0].text(-0.08, 0.5, row_titles[r], transform=axes[r][0].transAxes, rotation=90,
                            va="center", ha="right", fontsize=8)
    handles = [Line2D([0], [0], color=COLORS["gt"], lw=1.2, label="ground truth")] + [
        Line2D([0], [0], color=COLORS.get(k, "#D55E00"), lw=1.2, ls="--", label=MODEL_LABELS.get(k, k)) for k in preds]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0.02, 0.04, 1, 1))
    return fig


def _crop_slices(gt: np.ndarray, crop: int | None, shape: tuple[int, ...]) -> tuple[slice, slice]:
    if crop is None:
        return slice(None), slice(None)
    h, w = shape
    if gt.any():
        ys, xs = np.nonzero(gt)
        cy, cx = int(ys.mean()), int(xs.mean())
    else:
        cy, cx = h // 2, w // 2
    size = min(2 * crop, h, w)
    y0 = int(np.clip(cy - size // 2, 0, h - size))
    x0 = int(np.clip(cx - size // 2, 0, w - size))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def worst_cases_gallery(cases: Sequence[Mapping[str, Any]], window: str | tuple[float, float] | None = "lung",
                        crop: int | None = None) -> Figure:
    """The worst cases, one row each: the CT slice, the truth on it, the prediction on it.

    Args:
        cases: one mapping per row with ``image``, ``gt`` and ``pred`` (``(H, W)`` arrays) and ``title``
            (e.g. patient, slice and Dice of :func:`lungseg.metrics.worst_cases`).
        window: display window of :func:`show_ct`.
        crop: half the side in pixels of a square crop centred on the truth and prediction (``None``: the
            whole slice).

    Raises:
        ValueError: no cases, or a case missing a key or with arrays of different shapes.
    """
    if not cases:
        raise ValueError("worst_cases_gallery needs at least one case")
    fig, axes = plt.subplots(len(cases), 3, figsize=(7.5, 2.6 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        missing = [k for k in ("image", "gt", "pred", "title") if k not in case]
        if missing:
            raise ValueError(f"worst_cases_gallery: a case misses {missing}")
        image = _check_2d("image", case["image"])
        for name in ("gt", "pred"):
            _same_shape(name, case[name], image)
        gt, pred = np.asarray(case["gt"]) > 0, np.asarray(case["pred"]) > 0
        rows, cols = _crop_slices(gt | pred, crop, image.shape)
        show_ct(image[rows, cols], ax=row[0], window=window, title=str(case["title"]))
        show_slice(image[rows, cols], gt=gt[rows, cols], ax=row[1], window=window, title="truth", legend=False)
        show_slice(image[rows, cols], pred={"prediction": pred[rows, cols]}, ax=row[2], window=window,
                   title="prediction", legend=False)
    fig.tight_layout()
    return fig
