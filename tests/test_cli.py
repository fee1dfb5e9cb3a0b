"""The command line: every flag documented with its default, one-line errors, end-to-end runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lungseg.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
VERBS = ("phantom", "fetch", "train", "evaluate", "experiment", "tune", "predict", "export", "bench")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_verb_and_flag_is_documented_with_its_default() -> None:
    subs = _subparsers(build_parser())
    assert set(subs) == set(VERBS)
    for verb, p in subs.items():
        if verb == "bench":
            continue  # its flags belong to lungseg.bench
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{verb} {action.option_strings} has no help"
            documented = "default" in action.help or "required" in action.help or not action.option_strings
            assert documented, f"{verb} {action.option_strings}: help does not state the default: {action.help!r}"
    train = subs["train"].format_help()
    for flag in ("--data", "--model", "--loss", "--epochs", "--image-size", "--seed", "--out", "--resume", "--device",
                 "--precision"):
        assert flag in train
    for verb, flags in (("evaluate", ("--run", "--data", "--crf", "--out", "--precision")),
                        ("predict", ("--run", "--out", "--precision"))):
        text = subs[verb].format_help()
        assert all(f in text for f in flags)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lungseg", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_errors_are_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    np.savez(tmp_path / "nomasks.npz", images=np.zeros((2, 8, 8), np.float32))
    cases = [
        ["train", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "r")],
        ["train", "--data", str(bad), "--out", str(tmp_path / "r")],
        ["train", "--data", str(tmp_path / "nomasks.npz"), "--out", str(tmp_path / "r")],
        ["train", "--data", str(tmp_path / "nomasks.npz"), "--out", str(tmp_path / "r"), "--image-size", "50"],
        ["evaluate", "--run", str(tmp_path / "norun"), "--data", str(bad), "--out", str(tmp_path / "m.json")],
        ["predict", "--run", str(tmp_path / "norun"), str(bad), "--out", str(tmp_path / "o")],
        ["experiment", "--data", str(bad), "--out", str(tmp_path / "e"), "--models", "resnet"],
        ["train", "--model", "resnet", "--out", str(tmp_path / "r")],
        ["train", "--epochs", "many", "--out", str(tmp_path / "r")],
    ]
    for argv in cases:
        with pytest.raises(SystemExit) if argv[1] in ("--model", "--epochs") else _no_exit():
            code = main(argv)
            assert code == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (argv, err)
        assert "Traceback" not in err[0]
    # And through the real entry point (exit status, stderr).
    proc = _run("train", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "missing.npz" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


class _no_exit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_bench_verb_is_wired(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import lungseg.bench  # noqa: F401
    except ModuleNotFoundError:
        assert main(["bench"]) == 2
        assert "lungseg.bench" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as exc:
            main(["bench", "--help"])
        assert exc.value.code == 0 and "lungseg bench" in capsys.readouterr().out


@pytest.mark.slow
def test_phantom_train_evaluate_predict_through_the_cli(tmp_path: Path) -> None:
    study, run = tmp_path / "study", tmp_path / "run"
    assert main(["phantom", "--out", str(study), "--patients", "5", "--seed", "1", "--size", "64", "--slices", "6",
                 "--quiet"]) == 0
    assert (study / "manifest.json").is_file()
    proc = _run("train", "--data", str(study), "--model", "unet", "--loss", "hybrid", "--epochs", "1", "--image-size", "32", "--test-fraction", "0.2",
                "--seed", "0", "--out", str(run), "--device", "cpu", "--base-channels", "4", "--depth", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "best validation Dice" in proc.stdout
    assert main(["evaluate", "--run", str(run), "--data", str(study), "--out", str(tmp_path / "m.json"),
                 "--n-boot", "50", "--quiet"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["split"] == "test" and {"pooled", "per_image", "per_patient", "ci"} <= set(m)
    assert (tmp_path / "m_per_image.csv.gz").is_file()
    test_patient = json.loads((run / "split.json").read_text())["test"][0]
    assert main(["predict", "--run", str(run), str(study / test_patient / "ct"), "--out", str(tmp_path / "p.nii.gz"),
                 "--quiet"]) == 0
    assert (tmp_path / "p.nii.gz").is_file() and (tmp_path / "p_lesions.json").is_file()


def test_npz_train_and_resume_through_the_cli(make_npz, tmp_path: Path) -> None:
    data = make_npz(tmp_path / "d.npz", n_patients=8, per_patient=3, size=32)
    common = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--base-channels", "4", "--depth", "2",
              "--device", "cpu", "--quiet"]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "1"]) == 2  # exists: needs --resume
    assert main([*common, "--resume", "--epochs", "1"]) == 0  # already finished: nothing to do
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs_run"] == 1


def test_augmentation_flags_reach_the_training_config() -> None:
    from lungseg.cli import build_parser
    from lungseg.cli_options import config_from_args

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--flip-ud", "0", "--zoom", "1.2",
                                      "--max-rotation-deg", "10", "--hu-scale", "0.05", "--hu-offset", "0"])
    config = config_from_args(args)
    assert (config.flip_ud, config.zoom, config.max_rotation_deg, config.hu_scale, config.hu_offset) == (0.0, 1.2, 10.0, 0.05, 0.0)
    assert config.flip_lr == 0.5


@pytest.mark.parametrize("flag, field", [("--patch-size", "patch_size"), ("--patience", "patience"),
                                          ("--samples-per-epoch", "samples_per_epoch"),
                                          ("--tumour-fraction", "tumour_fraction"), ("--image-size", "image_size")])
def test_none_is_a_value_not_a_missing_flag(tmp_path: Path, flag: str, field: str) -> None:
    """`--patch-size none` means whole slices, also over a --config or default that sets a size."""
    from lungseg.cli_options import config_from_args

    given = {"patch_size": 64, "patience": 5, "samples_per_epoch": 100, "tumour_fraction": 0.5, "image_size": 64}
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps(given))
    from lungseg.config import TrainConfig

    base = TrainConfig.from_json(config_file)
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", flag, "none"])
    assert getattr(config_from_args(args, base), field) is None
    # not given: the --config's value stands
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert getattr(config_from_args(args, base), field) == given[field]


def test_patch_size_none_overrides_the_default_crop() -> None:
    from lungseg.cli_options import config_from_args

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--patch-size", "none"])
    assert config_from_args(args).patch_size is None


@pytest.mark.parametrize("argv", [
    ["train", "--data", "d", "--out", "o", "--batch-size", "1000000000"],
    ["train", "--data", "d", "--out", "o", "--depth", "100000000000000000000000"],
    ["train", "--data", "d", "--out", "o", "--image-size", str(2**40)],
    ["train", "--data", "d", "--out", "o", "--patch-size", str(2**40)],
])
def test_train_sizes_are_bounded_before_anything_is_allocated(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "at most" in err and "lungseg.limits" in err and "\n" not in err


@pytest.mark.parametrize("argv", [
    ["evaluate", "--run", "r", "--data", "d", "--out", "o.json", "--n-boot", "1000000000"],
    ["evaluate", "--run", "r", "--data", "d", "--out", "o.json", "--batch-size", "1000000000"],
    ["predict", "--run", "r", "in.npz", "--out", "o.npz", "--batch-size", "1000000000"],
    ["experiment", "--data", "d", "--out", "o", "--n-boot", "1000000000"],
])
def test_evaluation_and_prediction_sizes_are_bounded(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "expected an integer in" in err and "\n" not in err


@pytest.mark.parametrize("value", ["1.5", "0", "1", "-0.2", "nan", "inf", "half"])
def test_predict_threshold_is_refused_naming_the_flag(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A threshold outside (0, 1) is refused by the parser as ``--threshold``, before any model is loaded."""
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--run", "no-such-run", "in.npz", "--out", "o.npz", "--threshold", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument --threshold: expected a probability strictly between 0 and 1")
    assert repr(value) in err and "\n" not in err


def test_limits_are_in_the_help() -> None:
    from lungseg.limits import MAX_BATCH_SIZE, MAX_DEPTH, MAX_IMAGE_SIZE

    text = " ".join(_subparsers(build_parser())["train"].format_help().split())
    assert f"batch size <= {MAX_BATCH_SIZE}" in text and f"depth <= {MAX_DEPTH}" in text
    assert f"size <= {MAX_IMAGE_SIZE}" in text
