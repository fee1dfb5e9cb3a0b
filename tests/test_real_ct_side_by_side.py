"""``benchmarks/real_ct_side_by_side.py``: the three models' rows of chapter 10's side-by-side table, built from
the whole-scan rows of ``benchmarks/real_ct_scans.py`` and the published real-patch tables."""

from __future__ import annotations

from typing import Any

import pytest

TRANSFER = {"phantom_only": [{"phantom": "plain", "pooled Dice": 0.4}, {"phantom": "solid-randomised", "pooled Dice": 0.5097}],
            "fine_tuned": [{"initial weights": "random (today's defaults)", "mean": 0.7321},
                           {"initial weights": "phantom-only run, solid-randomised", "mean": 0.7197}]}


def scan_rows(lidc_dice: float, lung1_dice: float) -> list[dict[str, Any]]:
    levels = [{"reference": name, "dice": lidc_dice / (k + 1)}
              for k, name in enumerate(("≥1 of 4", "≥2 of 4 (consensus)", "≥3 of 4", "4 of 4"))]
    return [{"scan": "LIDC-IDRI-0314", "dice": lidc_dice, "components": 3, "tumour_component_dice": 0.8,
             "readers_pairwise_dice": 0.83, "reader_levels": levels},
            {"scan": "LUNG1-001", "dice": lung1_dice, "recall": 0.5, "components": 7}]


def test_one_row_per_model_with_every_reader_level_and_both_scans(load_benchmark: Any) -> None:
    module = load_benchmark("real_ct_side_by_side")
    names = list(module.models())
    patches = module.patch_numbers(TRANSFER)
    assert [patches[m]["real patches Dice"] for m in names] == [0.51, 0.732, 0.72]
    scans = {name: scan_rows(0.1 * (k + 1), 0.01 * (k + 1)) for k, name in enumerate(names)}
    rows = module.side_by_side(scans, patches)
    assert [r["model"] for r in rows] == names
    real = rows[1]
    assert real["LIDC Dice vs ≥2 of 4 (consensus)"] == pytest.approx(0.1)
    assert real["LIDC Dice vs 4 of 4"] == pytest.approx(0.05)  # each level of the scan row, passed through
    assert real["LUNG1-001 Dice"] == 0.02 and real["LIDC readers with each other"] == 0.83
    assert real["LIDC components"] == 3 and real["LUNG1-001 components"] == 7
    del scans["real-only"][0]["tumour_component_dice"]  # a mask that misses the nodule
    assert module.side_by_side(scans, patches)[1]["LIDC nodule's own component Dice"] is None


def test_a_phantom_outside_the_published_tables_gets_its_own_number_and_its_cross_validation_once_published(load_benchmark: Any) -> None:
    module = load_benchmark("real_ct_side_by_side")
    patches = module.patch_numbers(TRANSFER, module.CENTRAL, phantom_only_dice=0.4567)
    assert patches["phantom-only"] == {"real patches Dice": 0.457,
                                       "real patches: what": "all 130 real patches, never trained on (seed 0)"}
    assert patches["real-only"]["real patches Dice"] == 0.732  # the published model is the same either way
    assert patches["pretrained + fine-tuned"] == {"real patches Dice": None, "real patches: what": "not measured"}
    assert module.models(module.CENTRAL)["phantom-only"] == f"2000 phantom patches ({module.CENTRAL})"
    cross_validated = {**TRANSFER, "fine_tuned": [*TRANSFER["fine_tuned"],  # once the recipe's folds are published
                                                  {"initial weights": f"phantom-only run, {module.CENTRAL}", "mean": 0.708}]}
    patches = module.patch_numbers(cross_validated, module.CENTRAL, phantom_only_dice=0.4567)
    assert patches["pretrained + fine-tuned"]["real patches Dice"] == 0.708
    assert patches["phantom-only"]["real patches Dice"] == 0.457
