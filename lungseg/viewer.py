"""A volume you can scroll in the static book: :func:`volume_viewer`.

CT slices with their masks (the ground truth, each model's) behind a slider, as one self-contained
piece of HTML: every frame is drawn here, in Python, as a PNG embedded as a data URI, and a plain
``<input type="range">`` with a few lines of inline JavaScript swaps them. Nothing is fetched from a
network and no notebook server is needed, so it works offline, in the executed notebook and in the
book's static pages. Colours and names are :mod:`lungseg.viz`'s, as in every figure of the book.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from lungseg.viz import COLORS, MODEL_LABELS, grey_levels, window_limits

__all__ = ["VIEWER_MAX_BYTES", "VolumeViewer", "volume_viewer"]

#: The most bytes of HTML :func:`volume_viewer` makes: every frame is embedded in the executed
#: notebook and the book's page, so a bigger viewer asks for a crop, ``downsample`` or fewer slices.
VIEWER_MAX_BYTES = 4_000_000


@dataclass(frozen=True, repr=False)
class VolumeViewer:
    """A volume's slices behind a slider, as one self-contained piece of HTML (Jupyter shows it).

    Attributes:
        html: the ``<div>``: frames as PNG data URIs, a plain ``<input type="range">`` and a few lines
            of inline JavaScript that swap them; nothing is fetched, so it works offline and in the
            static book.
        n_frames: slices the slider moves through.
    """

    html: str
    n_frames: int

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        # short: a notebook stores this text/plain form beside the HTML, which holds every frame
        return f"VolumeViewer({self.n_frames} frames, {len(self.html):,} bytes of HTML)"


def _png_uri(pixels: np.ndarray) -> str:
    """A uint8 picture (grey ``(H, W)`` or RGBA ``(H, W, 4)``) as a PNG data URI."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of a binary mask with a 4-neighbour outside it (a one-pixel contour)."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def _mask_layer(mask: np.ndarray, color: str, opacity: float) -> np.ndarray:
    """RGBA ``(H, W, 4)``: the mask filled at ``opacity`` with its outline opaque, transparent elsewhere."""
    rgb = tuple(int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask] = (*rgb, round(255 * opacity))
    layer[_outline(mask)] = (*rgb, 255)
    return layer


def _downsample(volume: np.ndarray, factor: int, reduce: Any) -> np.ndarray:
    """``(Z, H, W)`` reduced over ``factor x factor`` blocks (edge rows/columns past a whole block dropped)."""
    z, h, w = volume.shape
    h, w = h - h % factor, w - w % factor
    blocks = volume[:, :h, :w].reshape(z, h // factor, factor, w // factor, factor)
    return reduce(blocks, axis=(2, 4))


def _viewer_frames(volume: np.ndarray, masks: dict[str, np.ndarray], window: str | tuple[float, float] | None,
                   downsample: int, opacity: float) -> dict[str, Any]:
    """The viewer's data: each distinct PNG once (``images``), and per frame the index of its CT picture
    (``ct``) and of each mask's layer (``layers``)."""
    index: dict[str, int] = {}

    def keep(uri: str) -> int:
        return index.setdefault(uri, len(index))

    ct = _downsample(volume.astype(np.float32), downsample, np.mean)
    lo, hi = window_limits(window, volume)
    fallback = iter(["#D55E00", "#0072B2", "#F0E442", "#999999"] * 4)
    colors = [COLORS.get(name) or next(fallback) for name in masks]
    # a mask shrinks by the block maximum, so a tumour smaller than a block stays visible
    small = [_downsample(m, downsample, np.max) for m in masks.values()]
    return {"ct": [keep(_png_uri(grey_levels(f, (lo, hi)))) for f in ct],
            "layers": [[keep(_png_uri(_mask_layer(f, c, opacity))) for f in m] for m, c in zip(small, colors)],
            "colors": colors, "images": list(index)}


def volume_viewer(volume: np.ndarray, masks: Mapping[str, np.ndarray] | None = None,
                  window: str | tuple[float, float] | None = "lung", title: str | None = None,
                  slice_labels: Sequence[str] | None = None, downsample: int = 1, opacity: float = 0.3,
                  display_width: int = 480, start: int | None = None,
                  max_bytes: int = VIEWER_MAX_BYTES) -> VolumeViewer:
    """A slider over the slices of a CT volume with its masks outlined in colour, for the static book.

    Every frame is drawn here, in Python, as PNGs embedded in the HTML (a picture shared by several
    frames, such as an empty mask, once); the browser only swaps them as the slider moves and
    shows or hides a mask with its checkbox. Nothing is loaded from a network.

    Args:
        volume: ``(Z, H, W)`` slices (HU, or unit intensities with ``window=None``).
        masks: ``{name: (Z, H, W) binary mask}``; names of :data:`COLORS` (``"gt"``, ``"unet"``,
            ``"attention"``, ``"crf"``) get their colour and label.
        window: the display window (:func:`window_limits`), one for the whole volume.
        title: a line over the picture.
        slice_labels: one label per slice (e.g. its index in the scan); default ``"slice k of Z"``.
        downsample: keep one pixel per ``downsample x downsample`` block (CT averaged, masks by their
            maximum), to keep the page small.
        opacity: the masks' fill; their outline is opaque.
        display_width: the picture's width on the page in CSS pixels (frames are scaled, pixelated).
        start: the slice shown first; default the one with the most pixels of the first mask.
        max_bytes: refuse to make more HTML than this.

    Returns:
        The :class:`VolumeViewer` (display it, or write its ``html``).

    Raises:
        ValueError: a volume that is not ``(Z, H, W)``, masks of another shape, labels of another
            length, a bad ``downsample``/``opacity``/``start``, or HTML over ``max_bytes``.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3 or 0 in vol.shape:
        raise ValueError(f"volume must be a non-empty (Z, H, W) array, got shape {vol.shape}")
    named = {k: np.asarray(m) > 0 for k, m in (masks or {}).items()}
    for k, m in named.items():
        if m.shape != vol.shape:
            raise ValueError(f"masks[{k!r}] must have the volume's shape {vol.shape}, got {m.shape}")
    n = vol.shape[0]
    labels = list(slice_labels) if slice_labels is not None else [f"slice {i + 1} of {n}" for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"need one slice label per slice, got {len(labels)} for {n} slices")
    if isinstance(downsample, bool) or int(downsample) != downsample or not 1 <= downsample <= min(vol.shape[1:]):
        raise ValueError(f"downsample must be an integer in [1, {min(vol.shape[1:])}], got {downsample!r}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if isinstance(display_width, bool) or int(display_width) != display_width or display_width < 1:
        raise ValueError(f"display_width must be a positive number of pixels, got {display_width!r}")
    first = next(iter(named.values()), None)
    start = int(np.argmax(first.sum(axis=(1, 2)))) if start is None and first is not None else (start or 0)
    if not 0 <= start < n:
        raise ValueError(f"start must be a slice index in [0, {n - 1}], got {start}")
    data = _viewer_frames(vol, named, window, int(downsample), opacity)
    data["labels"] = [f"{label}: " + ", ".join(f"{_viewer_name(k)} {int(m[i].sum())} px" for k, m in named.items())
                      if named else label for i, label in enumerate(labels)]
    page = _viewer_html(data, list(named), title, display_width, start, vol.shape[1:], int(downsample))
    if len(page) > max_bytes:
        raise ValueError(f"the viewer would be {len(page):,} bytes of HTML, over max_bytes={max_bytes:,}: crop the "
                         "volume, pass downsample=2 or show fewer slices")
    return VolumeViewer(page, n)


#: The viewer's script: the slider swaps the pictures of every layer and the label; a checkbox hides
#: its mask (``__ID__`` and ``__DATA__`` are filled in by :func:`_viewer_html`).
_VIEWER_SCRIPT = """(function () {
  var root = document.getElementById("__ID__"), data = __DATA__;
  var pictures = root.querySelectorAll("img[data-layer]"), slider = root.querySelector("input[type=range]");
  var label = root.querySelector(".lungseg-viewer-label");
  function show(i) {
    pictures[0].src = data.images[data.ct[i]];
    for (var k = 0; k < data.layers.length; k++) pictures[k + 1].src = data.images[data.layers[k][i]];
    label.textContent = data.labels[i];
  }
  slider.addEventListener("input", function () { show(Number(slider.value)); });
  root.querySelectorAll("input[data-toggle]").forEach(function (box) {
    box.addEventListener("change", function () {
      pictures[Number(box.dataset.toggle) + 1].style.visibility = box.checked ? "visible" : "hidden";
    });
  });
})();"""


def _viewer_name(name: str) -> str:
    return {"gt": "ground truth"}.get(name, MODEL_LABELS.get(name, name))


def _viewer_html(data: dict[str, Any], names: list[str], title: str | None, width: int, start: int,
                 shape: tuple[int, ...], downsample: int) -> str:
    """The viewer's ``<div>``: the stacked pictures at ``start``, the slider, the mask toggles and its script."""
    uid = "lungseg-viewer-" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    height = round(width * (shape[0] // downsample) / (shape[1] // downsample))
    img = ('<img alt="{alt}" data-layer="{k}" src="{src}" style="position:absolute;left:0;top:0;width:100%;'
           'height:100%;image-rendering:pixelated">')
    pictures = [img.format(alt="CT slice", k="ct", src=data["images"][data["ct"][start]])]
    pictures += [img.format(alt=html.escape(_viewer_name(k)), k=i, src=data["images"][data["layers"][i][start]])
                 for i, k in enumerate(names)]
    toggles = "".join(f'<label style="margin-right:1em"><input type="checkbox" checked data-toggle="{i}"> '
                      f'<span style="color:{c}">&#9632;</span> {html.escape(_viewer_name(k))}</label>'
                      for i, (k, c) in enumerate(zip(names, data["colors"])))
    frames = json.dumps({k: data[k] for k in ("images", "ct", "layers", "labels")}).replace("</", "<\\/")
    script = _VIEWER_SCRIPT.replace("__ID__", uid).replace("__DATA__", frames)
    return (f'<div id="{uid}" class="lungseg-viewer" style="font:13px sans-serif;max-width:{width}px">'
            + (f"<div><b>{html.escape(title)}</b></div>" if title else "")
            + f'<div style="position:relative;width:{width}px;height:{height}px;background:#000">{"".join(pictures)}</div>'
            + f'<input type="range" min="0" max="{len(data["ct"]) - 1}" step="1" value="{start}" aria-label="slice"'
            + f' style="width:{width}px">'
            + f'<div class="lungseg-viewer-label">{html.escape(data["labels"][start])}</div>'
            + f"<div>{toggles}</div><script>{script}</script></div>")
