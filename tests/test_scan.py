"""Whole-scan prediction (``lungseg.inference.scan``, ``lungseg.inference.region``): the lung region, a
model's stated pixel size and HU window, and ``lungseg predict`` with a patch model on a scan in HU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from lungseg.data.volume import CTVolume
from lungseg.errors import LungsegError
from lungseg.inference import Predictor
from lungseg.inference.lesions import label_candidates, lesion_summary
from lungseg.inference.region import lung_envelope, lung_region, lung_region_and_envelope, set_aside_outside_lungs
from lungseg.inference.scan import (
    REGIONS,
    UNSURE_MARGIN,
    hu_to_unit,
    model_images,
    resolve_region,
    segment_scan,
    set_aside_unsure,
    unsure_bar,
)
from lungseg.preprocess import Fingerprint

SPACING = (5.0, 1.0, 1.0)  # two 14 mL lung slices each: 6 slices make lungs above the 50 mL floor


def chest(n_slices: int = 6, size: int = 160) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A toy chest in HU: air around a soft-tissue body holding two lungs, a tumour against the
    left lung's outer wall (solid, so the air threshold cuts it out of the lung) and a soft-tissue
    blob far from both lungs (where no lung tumour can be)."""
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - 80) / 70) ** 2 + ((xx - 80) / 75) ** 2 <= 1
    left = ((yy - 80) / 40) ** 2 + ((xx - 45) / 22) ** 2 <= 1
    right = ((yy - 80) / 40) ** 2 + ((xx - 115) / 22) ** 2 <= 1
    wall_tumour = ((yy - 80) ** 2 + (xx - 25) ** 2 <= 64) & body
    far = (yy - 140) ** 2 + (xx - 80) ** 2 <= 16
    plane = np.full((size, size), -1000.0, dtype=np.float32)
    plane[body] = 40.0
    plane[left | right] = -850.0
    plane[wall_tumour] = 30.0
    volume = np.repeat(plane[None], n_slices, axis=0)
    return volume, {"lungs": left | right, "wall_tumour": wall_tumour, "far": far, "outside": ~body}


def test_the_lung_region_holds_the_lungs_and_wall_tumours_and_not_the_rest_of_the_body() -> None:
    hu, parts = chest()
    region = lung_region(hu, SPACING)
    assert region.shape == hu.shape and region.dtype == bool
    assert region[:, parts["lungs"]].all()
    assert region[:, parts["wall_tumour"]].all()  # closed back in: a juxta-pleural tumour is searched
    assert not region[:, parts["far"]].any()
    assert not region[:, parts["outside"] & (np.abs(np.mgrid[:160, :160][0] - 80) > 75)].any()


def test_candidates_mostly_outside_the_lungs_are_set_aside_whole() -> None:
    envelope = np.zeros((4, 20, 20), dtype=bool)
    envelope[:, :, :10] = True
    mask = np.zeros(envelope.shape, dtype=np.uint8)
    mask[1:3, 2:5, 2:5] = 1  # all inside
    mask[1:3, 10:13, 9:12] = 1  # a third inside: set aside
    mask[1:3, 15:18, 7:12] = 1  # three fifths inside: kept, all of it
    kept, aside = set_aside_outside_lungs(mask, envelope, 0.5)
    assert not (kept & aside).any() and np.array_equal(kept | aside, mask > 0)
    assert kept[1:3, 2:5, 2:5].all() and kept[1:3, 15:18, 7:12].all()
    assert aside[1:3, 10:13, 9:12].all() and aside.sum() == 18
    nothing_kept, _ = set_aside_outside_lungs(mask, np.zeros_like(envelope), 0.5)
    assert not nothing_kept.any()
    with pytest.raises(ValueError, match=r"envelope must be shaped like the mask \(4, 20, 20\)"):
        set_aside_outside_lungs(mask, envelope[0], 0.5)


def test_the_lungs_proper_lie_inside_the_searched_region() -> None:
    hu, parts = chest()
    envelope, region = lung_envelope(hu, SPACING), lung_region(hu, SPACING)
    both = lung_region_and_envelope(hu, SPACING)  # what prediction uses: the same two, the lungs found once
    assert np.array_equal(both[0], region) and np.array_equal(both[1], envelope)
    assert not (envelope & ~region).any()
    assert envelope[:, parts["lungs"]].mean() > 0.95  # whole up to the 3 mm grid's edge
    assert not envelope[:, parts["far"]].any() and not envelope[:, parts["outside"]].any()


def test_a_scan_without_lungs_has_an_empty_region_and_bad_input_is_refused() -> None:
    hu = np.full((4, 64, 64), 40.0, dtype=np.float32)
    hu[:, :4] = -1000.0  # air only at the border: outside the patient
    assert not lung_region(hu, SPACING).any()
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        lung_region(hu[0], SPACING)
    with pytest.raises(ValueError, match="spacing"):
        lung_region(hu, (1.0, 0.0, 1.0))


def test_the_fingerprint_states_pixel_size_and_hu_window_and_reads_them_back(tmp_path: Path) -> None:
    fp = Fingerprint(mean=0.5, std=0.3, window=None, image_size=48, intensity="unit", pixel_mm=2.0,
                     unit_window=(-970.0, 150.0))
    back = Fingerprint.from_json(fp.to_json(tmp_path / "fp.json"))
    assert back == fp and back.unit_window == (-970.0, 150.0)
    old = Fingerprint.from_json_text('{"format": "lungseg-fingerprint", "mean": 0, "std": 1}', "old")
    assert old.pixel_mm is None and old.unit_window is None  # fingerprints written before the fields
    with pytest.raises(ValueError, match="pixel_mm"):
        dataclasses.replace(fp, pixel_mm=0.0)
    with pytest.raises(ValueError, match="unit_window"):
        Fingerprint(mean=0.0, std=1.0, unit_window=(-1000.0, 400.0))  # a HU model needs no conversion
    with pytest.raises(ValueError, match="window"):
        dataclasses.replace(fp, unit_window=(150.0, -970.0))


def tiny_predictor(model_name: str = "unet", **fingerprint: object) -> Predictor:
    from lungseg.config import TrainConfig
    from lungseg.models import build_model

    config = TrainConfig(model=model_name, base_channels=4, depth=2, image_size=48, tta="none")
    torch.manual_seed(0)
    model = build_model(model_name, base_channels=4, depth=2)
    fp = Fingerprint(mean=0.5, std=0.3, window=None, image_size=48, intensity="unit", **fingerprint)
    return Predictor(model, config, fp, source="toy", device="cpu")


def test_a_model_that_states_its_pixel_size_resamples_slices_to_it() -> None:
    stated, unstated = tiny_predictor(pixel_mm=2.0), tiny_predictor()
    assert stated.network_size((512, 400), (0.78125, 1.0)) == (200, 200)
    assert stated.network_size((512, 512), None) is None
    assert unstated.network_size((512, 512), (0.7, 0.7)) is None
    images = np.random.default_rng(0).random((2, 100, 100), dtype=np.float32)
    probs = stated.probabilities(images, pixel_spacing=(1.0, 1.0))
    assert probs.shape == images.shape and np.isfinite(probs).all()


def test_hu_reaches_a_unit_model_only_through_its_stated_window() -> None:
    hu, _ = chest(n_slices=2)
    vol = CTVolume(image=hu, mask=None, spacing=SPACING, patient_id="toy")
    unit = hu_to_unit(hu, (-970.0, 150.0))
    assert unit.dtype == np.float32 and unit.min() == 0.0 and 0.0 < unit.max() <= 1.0
    np.testing.assert_allclose(unit[0, 80, 80], (40.0 + 970.0) / 1120.0, rtol=1e-6)
    with pytest.raises(LungsegError, match="states no HU window.*--unit-window"):
        model_images(tiny_predictor(), vol, "scan.nii.gz")
    np.testing.assert_array_equal(model_images(tiny_predictor(unit_window=(-970.0, 150.0)), vol, "x"), unit)


def test_auto_searches_the_lungs_of_a_scan_in_hu_and_all_of_a_unit_volume() -> None:
    hu, _ = chest()
    hu_vol = CTVolume(image=hu, mask=None, spacing=SPACING, patient_id="toy")
    unit_vol = CTVolume(image=hu_to_unit(hu, (-1000.0, 400.0)), mask=None, spacing=SPACING, patient_id="t",
                        intensity="unit")
    assert resolve_region("auto", hu_vol) == "lungs"
    assert resolve_region("auto", unit_vol) == "all"
    assert resolve_region("all", hu_vol) == "all"
    with pytest.raises(LungsegError, match="region must be one of auto, lungs, all"):
        resolve_region("body", hu_vol)
    with pytest.raises(LungsegError, match="lung region needs a scan in HU"):
        segment_scan(tiny_predictor(), unit_vol, region="lungs")


def test_segment_scan_marks_nothing_outside_the_lung_region() -> None:
    hu, _ = chest()
    vol = CTVolume(image=hu, mask=None, spacing=SPACING, patient_id="toy")
    run = tiny_predictor(pixel_mm=2.0, unit_window=(-970.0, 150.0))
    seg, info = segment_scan(run, vol, threshold=0.01)  # a low threshold: an untrained net marks much
    inside = lung_region(hu, SPACING)
    assert info["region"] == "lungs" and info["region_ml"] == pytest.approx(inside.sum() * 5.0 / 1000.0, abs=0.05)
    assert seg.mask.shape == hu.shape and not seg.mask[~inside].any() and not seg.probs[~inside].any()
    assert seg.mask[inside].any()
    everywhere, info_all = segment_scan(run, vol, threshold=0.01, region="all")
    assert info_all["region"] == "all" and everywhere.mask[~inside].any()
    assert info_all["set_aside"] is None and info["set_aside"]["rule"].startswith("outside the lungs: less than 50%")
    assert info["planes"] == "axial"  # 30 mm of slices: too short for three planes, so nothing set aside as unsure
    assert {les["reason"] for les in info["set_aside"]["lesions"]} <= {"outside the lungs"}
    kept_all, info_kept = segment_scan(run, vol, threshold=0.01, keep_outside_lungs=True)
    assert info_kept["set_aside"] is None and kept_all.mask.sum() >= seg.mask.sum()
    assert kept_all.mask.sum() - seg.mask.sum() == sum(les["voxels"] for les in info["set_aside"]["lesions"])


def test_the_cli_offers_the_same_regions_as_the_library() -> None:
    from lungseg.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["predict"]  # type: ignore[union-attr]
    (action,) = [a for a in sub._actions if a.dest == "region"]
    assert tuple(action.choices) == REGIONS


def test_a_scan_without_lungs_is_searched_whole_with_a_warning() -> None:
    from lungseg.errors import DataWarning

    hu = np.full((4, 64, 64), -1000.0, dtype=np.float32)  # air around a body of soft tissue, with no lung in it
    hu[:, 8:56, 8:56] = 40.0
    vol = CTVolume(image=hu, mask=None, spacing=SPACING, patient_id="toy")
    with pytest.warns(DataWarning, match="scan.nii.gz: no lungs found.*whole scan is searched"):
        seg, info = segment_scan(tiny_predictor(unit_window=(-970.0, 150.0)), vol, threshold=0.01, where="scan.nii.gz")
    assert info["region"] == "all" and seg.mask.shape == hu.shape


def test_a_model_without_a_pixel_size_sees_whole_slices_at_its_own_scale() -> None:
    """Inside the lungs a phantom-style model (no stated pixel size, slices resized to its input) gives
    the probabilities it gives on whole slices: the region masks, it does not crop and rescale. With a
    stated pixel size only the lungs' box is run, and the CRF sees 0 outside the lungs."""
    hu, _ = chest()
    vol = CTVolume(image=hu, mask=None, spacing=SPACING, patient_id="toy")
    model = tiny_predictor()
    model.fingerprint = Fingerprint(mean=-500.0, std=450.0, image_size=48)  # a HU model, no pixel size
    seg, info = segment_scan(model, vol, threshold=0.01)
    inside = lung_region(hu, SPACING)
    whole = model.probabilities(hu)
    assert info["region"] == "lungs"
    np.testing.assert_allclose(seg.probs[inside], whole[inside], rtol=1e-5, atol=1e-6)
    assert not seg.probs[~inside].any()
    with_crf, _ = segment_scan(model, vol, crf=True)
    assert not with_crf.mask[~inside].any()


def test_segment_keeps_probabilities_gates_and_mask_to_the_region_it_is_given() -> None:
    """Predictor.segment(keep=...): what segment_scan hands the lung region through."""
    hu, _ = chest()
    run = tiny_predictor("attention", unit_window=(-970.0, 150.0))
    images = hu_to_unit(hu, (-970.0, 150.0))
    inside = lung_region(hu, SPACING)
    free = run.segment(images, threshold=0.01, attention=True)
    kept = run.segment(images, threshold=0.01, attention=True, keep=inside)
    assert free.mask[~inside].any() and any(a[~inside].any() for a in free.alphas)  # there is something to remove
    assert not kept.mask[~inside].any() and not kept.probs[~inside].any()
    assert kept.alphas and not any(a[~inside].any() for a in kept.alphas)
    np.testing.assert_array_equal(kept.probs[inside], free.probs[inside])


def test_unsure_candidates_are_set_aside_whole_by_their_peak() -> None:
    mask = np.zeros((3, 10, 10), bool)
    probs = np.zeros((3, 10, 10), np.float32)
    mask[0:2, 1:3, 1:3], probs[0:2, 1:3, 1:3] = True, 0.55
    probs[1, 2, 2] = 0.61  # one voxel over the bar keeps the whole candidate
    mask[1, 6:9, 6:9], probs[1, 6:9, 6:9] = True, 0.58
    kept, unsure = set_aside_unsure(mask, probs, 0.6)
    assert kept[0:2, 1:3, 1:3].all() and unsure[1, 6:9, 6:9].all()
    assert not (kept & unsure).any() and ((kept | unsure) == mask).all()
    assert not set_aside_unsure(mask, probs, 0.62)[0].any()
    with pytest.raises(ValueError, match=r"shaped like the mask \(3, 10, 10\)"):
        set_aside_unsure(mask, probs[0], 0.6)


def _two_lung_blobs(peaks: tuple[float, float]):
    """A stand-in for the three planes' averaged map: a 5-voxel cube in the middle of each lung of the box
    it is given, peaking at ``peaks`` (left and right as they appear along the columns)."""
    from scipy import ndimage

    def probabilities(run, images, spacing, batch_size=16, progress=False, keep=None):
        lungs, _ = ndimage.label((images[len(images) // 2] > 0.05) & (images[len(images) // 2] < 0.2))
        probs = np.zeros(images.shape, np.float32)
        centres = sorted(ndimage.center_of_mass(lungs > 0, lungs, [1, 2]), key=lambda c: c[1])
        z = len(images) // 2
        for (y, x), peak in zip(centres, peaks):
            y, x = int(y), int(x)
            probs[z - 2:z + 3, y - 2:y + 3, x - 2:x + 3] = 0.55
            probs[z, y, x] = peak
        return probs
    return probabilities


def test_three_planes_set_aside_unsure_candidates_and_list_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import lungseg.inference.scan as scan

    hu, _ = chest(n_slices=16)  # 80 mm: long enough for three planes
    vol = CTVolume(image=hu, mask=None, spacing=SPACING, patient_id="toy")
    run = tiny_predictor(pixel_mm=2.0, unit_window=(-970.0, 150.0))
    monkeypatch.setattr(scan, "three_plane_probabilities", _two_lung_blobs((0.9, 0.5 + UNSURE_MARGIN - 0.02)))
    seg, info = segment_scan(run, vol)
    assert info["planes"] == "three" and seg.mask.sum() == 125
    (unsure,) = info["set_aside"]["lesions"]
    assert unsure["reason"] == "unsure" and unsure["voxels"] == 125 and unsure["peak_probability"] < 0.6
    assert "unsure: the averaged probability of the three planes peaks below 0.6 " in info["set_aside"]["rule"]
    kept, info_kept = segment_scan(run, vol, keep_unsure=True)
    assert kept.mask.sum() == 250 and info_kept["set_aside"]["count"] == 0
    higher, _ = segment_scan(run, vol, threshold=0.3)  # the bar follows the threshold: 0.4 keeps both
    assert higher.mask.sum() == 250
    both, info_both = segment_scan(run, vol, keep_unsure=True, keep_outside_lungs=True)
    assert both.mask.sum() == 250 and info_both["set_aside"] is None


def test_the_unsure_bar_is_a_tenth_above_the_threshold_and_never_reaches_one() -> None:
    assert unsure_bar(0.5) == pytest.approx(0.5 + UNSURE_MARGIN)
    assert unsure_bar(0.3) == pytest.approx(0.4)
    for high in (0.9, 0.95, 0.99):  # threshold + 0.1 would set aside every candidate
        assert high < unsure_bar(high) < 1.0


def test_candidates_are_labelled_in_their_box_as_in_the_whole_volume() -> None:
    """Labelling only the box that holds the candidates gives the whole volume's components, in the same order,
    and the lesion table places them in the whole volume (slice ranges and centroids)."""
    rng = np.random.default_rng(4)
    mask = np.zeros((30, 50, 60), dtype=np.uint8)
    mask[10:20, 15:40, 20:50] = rng.random((10, 25, 30)) > 0.93
    labels, n, box = label_candidates(mask)
    whole, n_whole = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), dtype=bool))
    assert n == n_whole > 10 and box[0].start >= 10 and box[2].stop <= 50
    np.testing.assert_array_equal(labels, whole[box])
    empty_labels, empty_n, _ = label_candidates(np.zeros_like(mask))
    assert empty_n == 0 and empty_labels.size == 0
    with pytest.raises(ValueError, match=r"mask must be a volume \(Z, H, W\), got shape \(50, 60\)"):
        label_candidates(mask[0])

    table = lesion_summary(mask, (2.0, 1.0, 1.0), probabilities=mask * 0.7)
    largest = table["lesions"][0]
    k = 1 + int(np.argmax(np.bincount(whole.ravel())[1:]))
    zs, ys, xs = np.nonzero(whole == k)
    assert largest["voxels"] == len(zs) and largest["slice_range"] == [int(zs.min()), int(zs.max())]
    np.testing.assert_allclose(largest["centroid_voxel"], [zs.mean(), ys.mean(), xs.mean()], atol=0.006)
    assert largest["peak_probability"] == 0.7 and table["count"] == n
    assert lesion_summary(np.zeros_like(mask), (2.0, 1.0, 1.0))["count"] == 0


@pytest.mark.parametrize(("offset", "scale", "padding", "says"), [
    (1024.0, 1.0, None, "stored CT values without their rescale"),  # saved without its rescale intercept
    (1024.0, 1.0, -2000.0, "stored CT values without their rescale"),  # the same with a padding value around it
    (970.0, 1.0 / 1120.0, None, "scaled to \\[0, 1\\]"),  # normalised to [0, 1] and saved as if in HU
])
def test_a_scan_taken_as_hu_whose_values_are_not_is_refused_naming_the_file(offset: float, scale: float,
                                                                            padding: float | None, says: str) -> None:
    """Without the check such a scan has no lungs, is searched whole, and comes back with an empty mask."""
    from lungseg.errors import DataError

    image, _ = chest()
    shifted = np.clip((np.clip(image, -970.0, 2000.0) + offset) * scale, 0.0, None if scale == 1.0 else 1.0)
    if padding is not None:
        shifted[:, :12, :] = padding  # outside the field of view
    vol = CTVolume(image=shifted.astype(np.float32), mask=None, spacing=SPACING, patient_id="toy")
    with pytest.raises(DataError, match=f"scan.nii.gz: intensities span .* 0.00% of the voxels lie in \\[-1100, -400\\].*{says}"
                                        ".*--region all"):
        segment_scan(tiny_predictor(unit_window=(-970.0, 150.0)), vol, threshold=0.01, where="scan.nii.gz")
    segment_scan(tiny_predictor(unit_window=(-970.0, 150.0)), CTVolume(image=image, mask=None, spacing=SPACING,
                                                                       patient_id="toy"), threshold=0.01)


def test_a_soft_tissue_crop_in_hu_is_refused_for_the_lungs_and_segmented_with_region_all() -> None:
    from lungseg.errors import DataError

    crop = CTVolume(image=np.full((4, 64, 64), 40.0, dtype=np.float32), mask=None, spacing=SPACING, patient_id="toy")
    with pytest.raises(DataError, match="no air or lung .*--region all"):
        segment_scan(tiny_predictor(unit_window=(-970.0, 150.0)), crop, threshold=0.01, where="crop.nii.gz")
    seg, info = segment_scan(tiny_predictor(unit_window=(-970.0, 150.0)), crop, threshold=0.01, region="all")
    assert info["region"] == "all" and seg.mask.shape == crop.image.shape
