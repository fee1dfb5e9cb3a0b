"""The volume viewer of the book: self-contained HTML whose slider moves through the slices, with
every frame the slice and masks it was given, nothing fetched from a network, and bad input refused."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungseg import viz
from lungseg.viewer import VolumeViewer, volume_viewer


def _volume(n: int = 6, h: int = 40, w: int = 36) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    volume = (-800 + rng.normal(0, 30, (n, h, w))).astype(np.float32)
    gt = np.zeros((n, h, w), bool)
    gt[2:5, 10:20, 12:22] = True
    volume[gt] = 40.0
    return volume, {"gt": gt, "unet": np.roll(gt, 2, axis=2), "attention": np.roll(gt, 1, axis=0)}


def _data(viewer: VolumeViewer) -> dict:
    """The frames the viewer's script holds."""
    return json.loads(re.search(r"data = (\{.*?\});\n", viewer.html).group(1).replace("<\\/", "</"))


def _picture(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_one_frame_per_slice_a_slider_over_them_and_nothing_fetched() -> None:
    volume, masks = _volume()
    viewer = volume_viewer(volume, masks, title="patient p01")
    data = _data(viewer)
    assert viewer.n_frames == len(data["ct"]) == len(data["labels"]) == 6
    assert [len(layer) for layer in data["layers"]] == [6, 6, 6]
    slider = re.search(r'<input type="range" min="(\d+)" max="(\d+)" step="1" value="(\d+)"', viewer.html)
    assert slider and slider.groups() == ("0", "5", str(int(np.argmax(masks["gt"].sum(axis=(1, 2))))))
    # offline: every picture is a data URI, and no URL of any scheme or host appears
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', viewer.html))
    assert not re.search(r"https?:|ftp:|src=\"//|<link|@import", viewer.html)
    assert viewer._repr_html_() == viewer.html and "patient p01" in viewer.html
    assert repr(viewer) == f"VolumeViewer(6 frames, {len(viewer.html):,} bytes of HTML)"  # not the frames again


def test_each_frame_is_its_slice_and_its_masks() -> None:
    volume, masks = _volume()
    data = _data(volume_viewer(volume, masks, window="lung"))
    for z in range(volume.shape[0]):
        np.testing.assert_array_equal(_picture(data["images"][data["ct"][z]]), viz.grey_levels(volume[z], "lung"))
        for layer, mask in zip(data["layers"], masks.values()):
            alpha = _picture(data["images"][layer[z]])[..., 3]
            np.testing.assert_array_equal(alpha > 0, mask[z])
            assert (alpha[mask[z]] == 255).any() == mask[z].any()  # the outline is opaque
        assert data["labels"][z].startswith(f"slice {z + 1} of 6: ground truth {int(masks['gt'][z].sum())} px")


def test_identical_pictures_are_embedded_once() -> None:
    volume, masks = _volume()
    data = _data(volume_viewer(volume, masks))
    empty = [layer[z] for layer, m in zip(data["layers"], masks.values()) for z in range(6) if not m[z].any()]
    assert len(set(empty)) == 1  # every empty mask layer is the same transparent picture
    assert len(data["images"]) == len(set(data["images"]))


def test_downsampling_keeps_a_tumour_smaller_than_a_block() -> None:
    volume, _ = _volume(n=2, h=40, w=40)
    dot = np.zeros(volume.shape, bool)
    dot[1, 21, 21] = True
    data = _data(volume_viewer(volume, {"gt": dot}, downsample=4))
    assert _picture(data["images"][data["ct"][0]]).shape == (10, 10)
    assert (_picture(data["images"][data["layers"][0][1]])[..., 3] > 0).sum() == 1


def test_same_volume_same_html_and_two_viewers_on_a_page_do_not_clash() -> None:
    volume, masks = _volume()
    a, b = volume_viewer(volume, masks), volume_viewer(volume, masks)
    c = volume_viewer(volume[::-1].copy(), {k: m[::-1].copy() for k, m in masks.items()})
    ids = [re.search(r'<div id="([^"]+)"', v.html).group(1) for v in (a, b, c)]
    assert a.html == b.html and ids[0] == ids[1] != ids[2]


def test_bad_input_is_refused_with_one_clear_line() -> None:
    volume, masks = _volume()
    cases = [
        ({"volume": volume[0]}, r"\(Z, H, W\)"),
        ({"volume": volume, "masks": {"gt": masks["gt"][:, :10]}}, r"masks\['gt'\] must have the volume's shape"),
        ({"volume": volume, "slice_labels": ["a"]}, "one slice label per slice"),
        ({"volume": volume, "downsample": 0}, "downsample must be an integer"),
        ({"volume": volume, "downsample": 1.5}, "downsample must be an integer"),
        ({"volume": volume, "opacity": 2.0}, r"opacity must be in \[0, 1\]"),
        ({"volume": volume, "start": 6}, r"start must be a slice index in \[0, 5\]"),
        ({"volume": volume, "window": "abdomen"}, "window must be one of"),
        ({"volume": volume, "max_bytes": 1000}, "over max_bytes=1,000: crop the volume"),
        ({"volume": volume, "display_width": 0}, "display_width must be a positive number"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            volume_viewer(**kwargs)


_FAKE_DOM = """
const data = {pictures: [], boxes: []};
function element(extra) {
  return Object.assign({handlers: {}, style: {}, dataset: {}, addEventListener(type, f) { this.handlers[type] = f; }}, extra);
}
const pictures = Array.from({length: %(n_layers)d + 1}, () => element({src: ""}));
const boxes = Array.from({length: %(n_layers)d}, (_, i) => element({checked: true, dataset: {toggle: String(i)}}));
const slider = element({value: "0"}), label = element({textContent: ""});
const root = {
  querySelectorAll(selector) { return selector.startsWith("img") ? pictures : boxes; },
  querySelector(selector) { return selector.startsWith("input") ? slider : label; },
};
global.document = {getElementById(id) { return id === %(uid)s ? root : null; }};
%(script)s
const seen = [];
for (const z of %(moves)s) {
  slider.value = String(z);
  slider.handlers.input();
  seen.push({srcs: pictures.map(p => p.src), label: label.textContent});
}
boxes[1].checked = false;
boxes[1].handlers.change();
console.log(JSON.stringify({seen: seen, hidden: pictures.map(p => p.style.visibility || "")}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the viewer's script")
def test_the_slider_moves_the_slices_in_the_script(tmp_path: Path) -> None:
    """The viewer's own JavaScript, run by node against a stand-in for the page: moving the slider
    shows that slice's CT and masks and label; a checkbox hides its mask."""
    volume, masks = _volume()
    viewer = volume_viewer(volume, masks)
    data = _data(viewer)
    uid = re.search(r'<div id="([^"]+)"', viewer.html).group(1)
    script = re.search(r"<script>(.*)</script>", viewer.html, re.DOTALL).group(1)
    moves = [5, 0, 3]
    page = tmp_path / "page.js"
    page.write_text(_FAKE_DOM % {"n_layers": len(masks), "uid": json.dumps(uid), "script": script,
                                 "moves": json.dumps(moves)}, encoding="utf-8")
    out = json.loads(subprocess.run(["node", str(page)], capture_output=True, text=True, check=True, timeout=60).stdout)
    for z, shown in zip(moves, out["seen"]):
        expected = [data["ct"][z], *(layer[z] for layer in data["layers"])]
        assert shown["srcs"] == [data["images"][i] for i in expected]
        assert shown["label"] == data["labels"][z]
    assert out["hidden"] == ["", "", "hidden", ""]
