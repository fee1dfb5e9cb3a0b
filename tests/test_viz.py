"""Behaviour of the book's plotting helpers: they draw what they are given and refuse bad input."""

from __future__ import annotations

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lungseg import viz


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _slice(h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    image = np.full((h, w), -850.0, dtype=np.float32)
    blob = (yy - h // 2) ** 2 + (xx - w // 3) ** 2 < (h // 8) ** 2
    image[blob] = 40.0
    return image, blob.astype(np.uint8)


def test_show_ct_uses_the_display_window():
    image, _ = _slice()
    fig = viz.show_ct(image, window="mediastinum")
    clim = fig.axes[0].images[0].get_clim()
    assert clim == viz.DISPLAY_WINDOWS["mediastinum"]
    fig = viz.show_ct(image, window=(-500, 100))
    assert fig.axes[0].images[0].get_clim() == (-500.0, 100.0)


def test_window_limits_percentiles_and_errors():
    lo, hi = viz.window_limits(None, np.linspace(0, 1, 1001))
    assert lo == pytest.approx(0.01, abs=1e-6) and hi == pytest.approx(0.99, abs=1e-6)
    with pytest.raises(ValueError, match="window"):
        viz.window_limits("abdomen")
    with pytest.raises(ValueError, match="high > low"):
        viz.window_limits((100, -100))
    with pytest.raises(ValueError, match="percentiles"):
        viz.window_limits(None)


def test_show_slice_draws_one_contour_per_nonempty_mask_and_a_legend():
    image, gt = _slice()
    pred = np.roll(gt, 3, axis=1)
    fig = viz.show_slice(image, gt=gt, pred={"unet": pred, "attention": np.zeros_like(gt)})
    ax = fig.axes[0]
    # contour sets: ground truth and U-Net; the empty attention mask draws nothing
    assert len(ax.collections) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ground truth", "U-Net", "Attention Res-U-Net"]


def test_show_slice_rejects_mismatched_mask():
    image, gt = _slice()
    with pytest.raises(ValueError, match=r"gt must have the image's shape \(64, 64\)"):
        viz.show_slice(image, gt=gt[:32])
    with pytest.raises(ValueError, match="2D slice"):
        viz.show_ct(image[None])


def test_overlay_attention_spans_the_slice_and_checks_values():
    image, gt = _slice()
    alpha = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    fig = viz.overlay_attention(image, alpha, gt=gt, colorbar=True)
    overlay = fig.axes[0].images[1]
    assert overlay.get_extent() == [-0.5, 63.5, 63.5, -0.5]
    np.testing.assert_array_equal(overlay.get_array(), alpha)
    alpha[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        viz.overlay_attention(image, alpha)


def test_attention_panel_one_axis_per_gate():
    image, gt = _slice()
    alphas = [np.full((1, 1, s, s), 0.5, np.float32) for s in (8, 16, 32, 64)]
    fig = viz.attention_panel(image, alphas, gt=gt)
    assert len([a for a in fig.axes if a.images]) == 5
    with pytest.raises(ValueError, match="alphas is empty"):
        viz.attention_panel(image, [])


def test_hu_histograms_are_normalised_per_tissue():
    rng = np.random.default_rng(1)
    fig = viz.hu_histograms({"lung": rng.normal(-850, 50, 5000), "tumour": rng.normal(30, 40, 300)}, log=False)
    ax = fig.axes[0]
    polygons = [p for p in ax.patches if isinstance(p, matplotlib.patches.Polygon)]
    assert len(polygons) == 2
    for poly in polygons:
        x, y = np.asarray(poly.get_xy()).T
        # shoelace area of the step outline: a density histogram integrates to 1
        area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        assert area == pytest.approx(1.0, rel=0.02)
    with pytest.raises(ValueError, match="samples is empty"):
        viz.hu_histograms({})


def test_figure2_grid_shape_and_crop():
    image, gt = _slice()
    preds = {"unet": [gt, gt], "attention": [gt, np.zeros_like(gt)]}
    fig = viz.figure2_grid([image, image], [gt, gt], preds, row_titles=["small", "large"], crop=10)
    assert len(fig.axes) == 8
    assert fig.axes[0].images[0].get_array().shape == (20, 20)
    with pytest.raises(ValueError, match="same non-zero length"):
        viz.figure2_grid([image], [gt, gt], preds)


def test_image_row_needs_matching_titles():
    image, _ = _slice()
    fig = viz.image_row([image, image / 1000], ["HU", "scaled"], windows=["paper", None])
    assert fig.axes[0].images[0].get_clim() == viz.DISPLAY_WINDOWS["paper"]
    with pytest.raises(ValueError, match="titles"):
        viz.image_row([image], ["a", "b"])


def _hex_rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)


def test_overlay_masks_fills_only_the_mask_in_its_colour():
    image, gt = _slice()
    rgb = viz.overlay_masks(image, {"gt": gt}, window="lung", opacity=0.5)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    plain = viz.overlay_masks(image, None, window="lung")
    assert np.array_equal(rgb[gt == 0], plain[gt == 0])  # outside the mask: the windowed grey slice
    lo, hi = viz.DISPLAY_WINDOWS["lung"]
    grey = np.rint((np.clip(image, lo, hi) - lo) * 255 / (hi - lo))
    assert np.array_equal(plain[..., 0], grey.astype(np.uint8))
    inside = rgb[gt > 0].astype(np.float64)
    expected = 0.5 * _hex_rgb(viz.COLORS["gt"]) + 0.5 * plain[gt > 0].astype(np.float64)
    assert np.abs(inside - expected).max() <= 1.0  # alpha blend of the ground-truth green
    original = image.copy()
    viz.overlay_masks(image, gt)
    assert np.array_equal(image, original)  # never writes into its input
    with pytest.raises(ValueError, match="shape"):
        viz.overlay_masks(image, {"gt": gt[:10]})
    with pytest.raises(ValueError, match="opacity"):
        viz.overlay_masks(image, gt, opacity=2.0)


def test_montage_tiles_slices_with_make_grid():
    image, gt = _slice()
    fig = viz.montage([image] * 5, masks=[{"gt": gt, "unet": gt}, gt, None, gt, gt], titles=list("abcde"), ncols=3)
    grid = fig.axes[0].images[0].get_array()
    padding = max(2, 64 // 64)
    band = max(12, 64 // 6)
    assert grid.shape[:2] == (2 * (64 + band) + 3 * padding, 3 * 64 + 4 * padding)
    assert [t.get_text() for t in fig.axes[0].texts] == list("abcde")
    assert len(fig.legends) == 1
    plain = viz.montage([image, image], ncols=4)
    assert plain.axes[0].images[0].get_array().shape[:2] == (64 + 2 * padding, 2 * 64 + 3 * padding)
    with pytest.raises(ValueError, match="images is empty"):
        viz.montage([])
    with pytest.raises(ValueError, match="one title per image"):
        viz.montage([image], titles=["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        viz.montage([image, image[:32]])


def test_worst_cases_gallery_one_row_per_case():
    from lungseg.metrics import worst_cases

    rng = np.random.default_rng(0)
    images = rng.normal(-700, 100, (3, 32, 32))
    gt = np.zeros((3, 32, 32), np.uint8)
    gt[:, 10:16, 10:16] = 1
    pred = np.roll(gt, (0, 0, 3), axis=(0, 1, 2)) * np.array([1, 0, 1])[:, None, None]
    worst = worst_cases(pred, gt, ["a", "a", "b"], n=2)
    assert [w["index"] for w in worst] == [1, 0]  # slice 1 missed entirely, then the shifted ones
    cases = [{"image": images[w["index"]], "gt": gt[w["index"]], "pred": pred[w["index"]],
              "title": f"{w['patient_id']} z={w['index']}: Dice {w['dice']:.2f}"} for w in worst]
    fig = viz.worst_cases_gallery(cases, crop=8)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "a z=1: Dice 0.00"
    assert fig.axes[0].get_images()[0].get_array().shape == (16, 16)
    with pytest.raises(ValueError, match="misses"):
        viz.worst_cases_gallery([{"image": images[0]}])
    with pytest.raises(ValueError, match="at least one"):
        viz.worst_cases_gallery([])
