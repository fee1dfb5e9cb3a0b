"""``benchmarks/real_patch_confidence.py``: candidates and cross-sections of a patch, the scores at a bar, the
rule that picks the unsure bar (the highest candidate bar that keeps the tumours found at 0.6 within 2 % and the
pooled Dice within 0.005) and the second seed's confirmation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def _patches(rc: Any) -> tuple[list[dict[str, Any]], np.ndarray]:
    probs = np.zeros((2, 10, 10), np.float32)
    reference = np.zeros((2, 10, 10), bool)
    probs[0, 1:4, 1:4], reference[0, 1:4, 1:4] = 0.95, True  # a sure tumour
    probs[0, 6:8, 6:8] = 0.65  # a false candidate, unsure
    probs[1, 2:5, 2:5], reference[1, 2:5, 2:4] = 0.75, True  # a tumour found with a peak of 0.75
    return [rc.candidates_and_sections(p, r) for p, r in zip(probs, reference)], reference.astype(np.uint8)


def test_a_bar_sets_aside_candidates_below_it_and_counts_the_sections_still_found(load_benchmark: Any) -> None:
    rc = load_benchmark("real_patch_confidence")
    patches, reference = _patches(rc)
    assert [len(p["peaks"]) for p in patches] == [2, 1] and [p["n_sections"] for p in patches] == [1, 1]
    low, mid, high = (rc.score_bar(patches, reference, b) for b in (0.6, 0.7, 0.8))
    assert (low["sections_found"], low["candidates_kept"], low["false_candidates_kept"]) == (2, 3, 1)
    assert (mid["sections_found"], mid["candidates_kept"], mid["false_candidates_kept"]) == (2, 2, 0)
    assert mid["pooled_dice"] == pytest.approx(2 * 15 / (18 + 15), abs=1e-4)
    assert (high["sections_found"], high["recall"]) == (1, pytest.approx(9 / 15, abs=1e-4))


def test_the_rule_takes_the_highest_candidate_bar_within_the_allowed_loss(load_benchmark: Any) -> None:
    rc = load_benchmark("real_patch_confidence")

    def row(found: int, dice: float) -> dict[str, Any]:
        return {"sections_found": found, "pooled_dice": dice}

    base = {"0.5": row(105, 0.637), "0.6": row(105, 0.637), "0.9": row(90, 0.64)}
    # floor(2 % of 105) = 2 cross-sections may be lost
    assert rc.decide({**base, "0.7": row(104, 0.636), "0.8": row(103, 0.636)})["chosen_bar"] == 0.8
    assert rc.decide({**base, "0.7": row(104, 0.636), "0.8": row(102, 0.636)})["chosen_bar"] == 0.7
    # a Dice more than 0.005 lower fails even when no section is lost
    assert rc.decide({**base, "0.7": row(105, 0.631), "0.8": row(105, 0.630)})["chosen_bar"] == 0.6
    kept = rc.decide({**base, "0.7": row(100, 0.637), "0.8": row(100, 0.637)})
    assert kept["chosen_bar"] == 0.6 and not kept["changes_default"] and kept["allowed_lost"] == 2


def test_a_cross_section_is_found_only_when_a_tenth_of_it_is_covered(load_benchmark: Any) -> None:
    rc = load_benchmark("real_patch_confidence")
    probs = np.zeros((1, 12, 12), np.float32)
    reference = np.zeros((1, 12, 12), bool)
    reference[0, :10, :10] = True  # 100 pixels
    probs[0, 0, :9] = 0.9  # 9 pixels covered: under a tenth
    patches = [rc.candidates_and_sections(probs[0], reference[0])]
    assert rc.score_bar(patches, reference.astype(np.uint8), 0.6)["sections_found"] == 0
    probs[0, 0, 9] = 0.9  # 10 pixels: found
    patches = [rc.candidates_and_sections(probs[0], reference[0])]
    assert rc.score_bar(patches, reference.astype(np.uint8), 0.6)["sections_found"] == 1


def test_a_second_seed_confirms_the_bar_only_within_the_same_limits(load_benchmark: Any) -> None:
    rc = load_benchmark("real_patch_confidence")
    today = {"sections_found": 100, "pooled_dice": 0.70}
    assert rc.confirms({"0.6": today, "0.8": {"sections_found": 98, "pooled_dice": 0.696}}, 0.8)
    assert not rc.confirms({"0.6": today, "0.8": {"sections_found": 97, "pooled_dice": 0.70}}, 0.8)
    assert not rc.confirms({"0.6": today, "0.8": {"sections_found": 100, "pooled_dice": 0.694}}, 0.8)


def test_confirm_records_a_check_not_a_choice_of_its_own(load_benchmark: Any, tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    rc = load_benchmark("real_patch_confidence")
    pooled = {"0.5": {"sections_found": 106, "pooled_dice": 0.65}, "0.6": {"sections_found": 105, "pooled_dice": 0.65},
              "0.7": {"sections_found": 104, "pooled_dice": 0.65}, "0.8": {"sections_found": 102, "pooled_dice": 0.642},
              "0.9": {"sections_found": 102, "pooled_dice": 0.642}}
    monkeypatch.setattr(rc, "run", lambda seeds, work: {"command": "python benchmarks/real_patch_confidence.py --seeds 1",
                                                        "pooled_over_folds": pooled, "decision": rc.decide(pooled)})
    assert rc.main(["--seeds", "1", "--confirm", "0.8", "--out", str(tmp_path / "c.json")]) == 0
    written = json.loads((tmp_path / "c.json").read_text())
    assert "decision" not in written and written["confirmation"] == {"bar": 0.8, "confirmed": False}
    assert written["command"].endswith("--confirm 0.8")
    assert rc.main(["--seeds", "1", "--out", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["decision"]["chosen_bar"] == 0.7


def test_the_dice_limit_is_met_exactly_at_the_allowed_drop(load_benchmark: Any) -> None:
    rc = load_benchmark("real_patch_confidence")
    assert rc.confirms({"0.6": {"sections_found": 100, "pooled_dice": 0.5006},
                        "0.8": {"sections_found": 100, "pooled_dice": 0.4956}}, 0.8)
