"""Tests of lungseg.bench: the quick benchmark runs end to end and writes valid, complete JSON.

Timings are never asserted (they depend on the machine and its load); only structure and sanity.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lungseg import bench
from lungseg.bench.harness import matmul_like_convolutions
from lungseg.bench.networks import MONAI_REFERENCE, NETWORKS, PAPER_MODEL, build_bench_model
from lungseg.device import cpu_has_bf16
from lungseg.errors import LungsegError
from lungseg.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "bench"
PACKAGE = ROOT / "lungseg" / "bench"


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object]:
    pytest.importorskip("monai")
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--quick", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "bench.json").read_text()), out


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_writes_json_and_markdown(quick_result: tuple[dict, object]) -> None:
    result, out = quick_result
    assert result["quick"] is True
    for key in ("config", "device", "threads", "protocol", "models", "ceiling", "ratios", "crf", "data_pipeline",
                "training_step", "phantom_generation", "series_prediction", "provenance", "load_average"):
        assert key in result, key
    assert result["threads"]["intra_op"] >= 1
    assert {"git", "packages", "device", "time_utc"} <= set(result["provenance"])
    md = (out / "bench.md").read_text()
    assert "| variant | network |" in md and "AttentionUnet (MONAI)" in md
    assert "## Training step (patches)" in md and "patches/s" in md
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_has_a_bar_per_network_and_variant(quick_result: tuple[dict, object]) -> None:
    result, _ = quick_result
    fig = bench.plot_bench(result)
    n_bars = len(result["models"]) * len(next(iter(result["models"].values()))["variants"])
    for ax in fig.axes:
        assert len(ax.patches) == n_bars
    assert bench.plot_bench({**result, "models": {}}) is None


def test_models_measured_side_by_side(quick_result: tuple[dict, object]) -> None:
    result, _ = quick_result
    assert list(result["models"]) == [*MODELS, MONAI_REFERENCE] == list(NETWORKS)
    variants = None
    for name, m in result["models"].items():
        assert _positive(m["parameters"]) and _positive(m["forward_flops"]), name
        assert variants is None or set(m["variants"]) == variants  # every variant for every model
        variants = set(m["variants"])
        for v in m["variants"].values():
            for key in ("train_images_per_s", "infer_images_per_s", "latency_ms", "train_mfu", "infer_mfu"):
                assert _positive(v[key]), (name, key)
            assert v["train_step"]["repeats"] == result["config"]["repeats"]
        mem = m["memory"]
        assert "error" not in mem, mem
        assert mem["train_peak_delta_mb"] >= 0 and mem["infer_peak_delta_mb"] >= 0
    assert "fp32" in variants
    ratio = result["ratios"]["fp32"]
    att = result["models"][PAPER_MODEL]["variants"]["fp32"]
    monai = result["models"]["monai_attention_unet"]["variants"]["fp32"]
    assert ratio["train_throughput_ratio"] == pytest.approx(att["train_images_per_s"] / monai["train_images_per_s"])
    for key in ("train_throughput_ratio_paired", "infer_throughput_ratio_paired", "latency_ratio_paired"):
        assert _positive(ratio[key]), key
    # matched widths: MONAI gets base * 2**l channels, so parameter counts are within a factor of 2
    assert 0.5 < result["models"][PAPER_MODEL]["parameters"] / result["models"][MONAI_REFERENCE]["parameters"] < 2


def test_pipeline_sections(quick_result: tuple[dict, object]) -> None:
    result, _ = quick_result
    assert _positive(result["ceiling"]["fp32"]["tflops_median"])
    assert result["ceiling"]["fp32"]["n"] == result["config"]["matmul_size"]
    assert _positive(result["crf"]["ms_per_slice"]) and _positive(result["crf"]["batch_parallel_slices_per_s"])
    data = result["data_pipeline"]
    stages = data["stages"]
    assert list(stages) == ["dicom_read", "dataset_from_dicom", "dataset_from_cache", "sampler_patches", "sampler_slices"]
    for key, stage in stages.items():
        assert _positive(stage["patches_per_s" if key == "sampler_patches" else "slices_per_s"]), key
        assert _positive(stage["headroom_over_training"]), key
    assert stages["sampler_patches"]["patch_size"] == result["config"]["patch_size"]
    assert data["training_consumes_patches_per_s"] == \
        result["training_step"]["models"][PAPER_MODEL]["fixed_batch_patches_per_s"]
    assert _positive(result["phantom_generation"]["slices_per_s"])
    pred = result["series_prediction"]
    assert pred["slices"] == result["config"]["series_slices"] and _positive(pred["seconds_with_crf"])
    # predict's default: bf16 where the CPU has it natively (timed beside fp32), else fp32
    assert pred["default_precision"] == ("bf16" if cpu_has_bf16() else "fp32") and "fp32" in pred["precisions"]
    assert pred["default_precision"] in pred["precisions"]


def test_training_step_section(quick_result: tuple[dict, object]) -> None:
    """(a) the sampled step, (b) the fixed-batch step and (c) the sampler, for each of lungseg's networks."""
    result, _ = quick_result
    step, cfg = result["training_step"], result["config"]
    assert step["patch_size"] == cfg["patch_size"] < cfg["image_size"] and step["batch"] == cfg["train_batch"]
    assert step["precision"] == "fp32" and step["channels_last"] is False and step["slices"] >= 1
    assert _positive(step["sampler"]["patches_per_s"]) and step["sampler"]["step"]["repeats"] == cfg["repeats"]
    assert list(step["models"]) == list(MODELS)
    for name, m in step["models"].items():
        for key in ("train_patches_per_s", "fixed_batch_patches_per_s"):
            assert _positive(m[key]), (name, key)
        assert m["full_step"]["repeats"] == m["fixed_batch_step"]["repeats"] == cfg["repeats"]
        assert 0.0 <= m["share_outside_network"] <= 1.0, name
        assert m["share_outside_network"] == pytest.approx(
            m["train_patches_per_s"] / step["sampler"]["patches_per_s"])
        assert math.isfinite(m["share_outside_network_difference"]) and m["share_outside_network_difference"] < 1
        assert m["target_share"] == 0.10 and m["target_met"] is (m["share_outside_network"] < 0.10)


def test_training_step_alone(tmp_path) -> None:
    """``--sections train_step`` generates the phantom it needs and nothing else."""
    result = bench.run_bench(quick=True, device="cpu", out_dir=tmp_path, sections=["train_step"], progress=False)
    assert {"training_step", "phantom_generation"} <= set(result) and "data_pipeline" not in result
    assert "## Training step (patches)" in (tmp_path / "bench.md").read_text()


def test_without_the_crf_its_sections_are_skipped_and_said(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pydensecrf2 the crf and predict sections are left out with a note and a warning, and the
    others are measured: on a lent GPU machine without the CRF the bench used to end in an ImportError
    traceback after minutes of measuring."""
    import lungseg.crf

    monkeypatch.setattr(lungseg.crf, "crf_available", lambda: False)
    with pytest.warns(UserWarning, match="sections crf, predict not measured: .*pydensecrf2"):
        result = bench.run_bench(quick=True, device="cpu", out_dir=tmp_path, sections=["crf", "train_step", "predict"],
                                 progress=False)
    assert "training_step" in result and not {"crf", "series_prediction", "real_series_prediction"} & set(result)
    assert any("pydensecrf2" in note for note in result["notes"])
    assert "not measured: the dense CRF" in (tmp_path / "bench.md").read_text()
    with pytest.raises(LungsegError, match="--sections crf,predict: nothing to measure without the CRF"):
        bench.run_bench(quick=True, device="cpu", out_dir=tmp_path / "none", sections=["crf", "predict"],
                        progress=False)
    assert not (tmp_path / "none").exists()


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_bf16_measured_where_the_cpu_has_it(quick_result: tuple[dict, object]) -> None:
    result, out = quick_result
    for m in result["models"].values():
        assert _positive(m["variants"]["bf16"]["train_images_per_s"])
    assert _positive(result["ceiling"]["bf16"]["tflops_median"])
    assert _positive(result["variant_ceilings"]["bf16"]["train_rounds_tflops"])
    pred = result["series_prediction"]
    assert _positive(pred["precisions"]["bf16"]["seconds_with_crf"])
    agree = pred["bf16_vs_fp32"]
    assert 0.0 <= agree["voxels_differing_fraction"] <= 1.0 and 0.0 <= agree["mask_dice"] <= 1.0
    assert "--precision bf16" in (out / "bench.md").read_text()


def test_bad_arguments_are_user_errors(tmp_path) -> None:
    with pytest.raises(LungsegError, match="--sections"):
        bench.run_bench(quick=True, device="cpu", out_dir=tmp_path, sections=["models", "gpu"], progress=False)
    with pytest.raises(LungsegError, match="repeats"):
        bench.main(["--quick", "--repeats", "0", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(ValueError, match="image_size"):
        bench.BenchConfig(image_size=100, depth=4)
    with pytest.raises(ValueError, match="patch_size"):
        bench.BenchConfig(image_size=64, patch_size=20, depth=3)
    with pytest.raises(ValueError, match="patch_size"):
        bench.BenchConfig(image_size=64, patch_size=128)
    with pytest.raises(LungsegError, match="patch-size"):
        bench.main(["--quick", "--patch-size", "30", "--out", str(tmp_path), "--quiet"])
    assert not (tmp_path / "bench.json").exists()


def test_cuda_fp32_ceiling_uses_tf32_exactly_when_convolutions_do() -> None:
    # the flags are plain switches, settable without a GPU
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for conv_tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = conv_tf32
            torch.backends.cuda.matmul.allow_tf32 = not conv_tf32
            with matmul_like_convolutions(torch.device("cuda")):
                assert torch.backends.cuda.matmul.allow_tf32 is conv_tf32
            assert torch.backends.cuda.matmul.allow_tf32 is (not conv_tf32)
            with matmul_like_convolutions(torch.device("cpu")):
                assert torch.backends.cuda.matmul.allow_tf32 is (not conv_tf32)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


def test_committed_result_still_renders() -> None:
    """The committed bench.json is in today's schema (its networks named by the model registry): it renders
    to exactly the committed bench.md, and its chart has a bar per network and variant."""
    result = json.loads((COMMITTED / "bench.json").read_text())
    assert bench.write_markdown(result) == (COMMITTED / "bench.md").read_text()
    assert list(result["models"]) == list(NETWORKS)
    fig = bench.plot_bench(result)
    n_variants = len(result["models"][PAPER_MODEL]["variants"])
    assert all(len(ax.patches) == len(NETWORKS) * n_variants for ax in fig.axes[:2])


def test_networks_are_the_model_registry_plus_monai() -> None:
    assert NETWORKS[:-1] == tuple(MODELS) and NETWORKS[-1] == MONAI_REFERENCE
    for name in MODELS:
        model = build_bench_model(name, base_channels=4, depth=2)
        assert isinstance(model, MODELS[name])
        assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="attention_resunet"):
        build_bench_model("attention_resunet")


def test_measurements_import_only_the_harness_and_the_network_list() -> None:
    """Imports inside lungseg.bench point downward: measurements never import each other."""
    below = {"harness": set(), "networks": set(), "report": set()}
    measurements = {"throughput", "memory", "training_step", "pipeline", "crf", "prediction"}
    allowed = {**below, **{m: {"harness", "networks"} for m in measurements},
               "run": {"harness", "networks", "report", *measurements}, "cli": {"harness", "report", "run"}}
    for path in PACKAGE.glob("*.py"):
        if path.stem in ("__init__", "__main__"):
            continue
        imported = {node.module.split(".")[2] for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lungseg.bench.")}
        assert imported <= allowed[path.stem], (path.name, imported - allowed[path.stem])


def test_python_dash_m_help() -> None:
    out = subprocess.run([sys.executable, "-m", "lungseg.bench", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.startswith("usage: lungseg bench") and "speed, cost and memory" in out and "--sections" in out


def test_real_series_prediction_times_predict_with_and_without_crf(tmp_path) -> None:
    """Skipped (with the reason) in a quick run or where the series is absent; else two timed predict calls.
    A 4-slice phantom series stands in for the real one (which `lungseg bench` finds in the shared folder)."""
    from lungseg.bench.harness import QUICK
    from lungseg.bench.prediction import real_series_prediction
    from lungseg.data.dicom_write import write_dicom_series
    from lungseg.data.phantom import PhantomConfig, generate_patient

    cpu = torch.device("cpu")
    assert "quick run" in real_series_prediction(QUICK, tmp_path, cpu, quick=True)["skipped"]
    missing = real_series_prediction(QUICK, tmp_path, cpu, series=tmp_path / "absent")
    assert "absent not found" in missing["skipped"] and "LUNGSEG_REALCT" in missing["skipped"]
    vol, _ = generate_patient(1, PhantomConfig(image_size=QUICK.image_size, n_slices=4))
    write_dicom_series(vol, tmp_path / "series")
    got = real_series_prediction(QUICK, tmp_path, cpu, series=tmp_path / "series")
    assert got["slices"] == 4 and got["shape"] == [4, QUICK.image_size, QUICK.image_size]
    assert _positive(got["read_seconds"]) and _positive(got["seconds"]) and _positive(got["seconds_with_crf"])
    assert got["within_goal"] is (got["seconds_with_crf"] <= got["goal_seconds_with_crf"])
    trained = got["published_model"]  # the published medium run, committed with the repository
    assert trained["run"].endswith("attention-hybrid-seed0") and _positive(trained["seconds_with_crf"])
    assert trained["crf_share"] == pytest.approx(trained["seconds_with_crf"] / trained["seconds"] - 1)
    real_ct = got["real_ct_model"]  # the published real-CT model .zip, timed as Bring your own data runs it
    assert real_ct["run"].endswith("msd-patches-attention.zip") and _positive(real_ct["seconds_with_crf"])
