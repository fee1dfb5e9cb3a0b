"""A bench result as markdown tables (``bench.md``) and as a chart (``bench.png``), and writing all three files.

The renderers read only the result dictionary, so they also draw the results of earlier runs.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.files import atomic_write_bytes, atomic_write_text, json_safe

__all__ = ["plot_bench", "write_markdown", "write_outputs"]

# ---------------------------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _load(avg: Sequence[float] | None) -> str:
    return "–" if not avg else f"{avg[0]:.1f}"


def _sentence(head: str, parts: Sequence[str]) -> list[str]:
    """``head`` and ``parts`` joined by semicolons as one paragraph; nothing when there are no parts."""
    return [head + "; ".join(parts) + ".", ""] if parts else []


def _header(result: dict[str, Any]) -> list[str]:
    cfg = result["config"]
    prov = result.get("provenance", {})
    git = prov.get("git", {}) or {}
    return [
        f"# lungseg bench{' (quick: tiny sizes, numbers not meaningful)' if result.get('quick') else ''}",
        "",
        f"Device: {prov.get('device', result['device'])}; torch {prov.get('packages', {}).get('torch')}, "
        f"MONAI {prov.get('packages', {}).get('monai')}; threads: {result['threads']['intra_op']} intra-op, "
        f"{result['threads']['inter_op']} inter-op; commit {(git.get('commit') or 'unknown')[:12]}"
        f"{' (modified)' if git.get('dirty') else ''}; {prov.get('time_utc')}; 1-minute load average at start / end "
        f"{_load(result['load_average']['start'])} / {_load(result['load_average']['end'])}.",
        "",
        f"Input `(B, 1, {cfg['image_size']}, {cfg['image_size']})`, base width {cfg['base_channels']}, depth "
        f"{cfg['depth']}; training batch {cfg['train_batch']}, inference batch {cfg['infer_batch']}. {result['protocol']}.",
        "",
    ]


def _networks(result: dict[str, Any]) -> list[str]:
    lines = ["## Networks", "",
             "| network | parameters | forward GFLOPs / image | train peak mem (MB) | inference peak mem (MB) |",
             "|---|---:|---:|---:|---:|"]
    for m in result["models"].values():
        mem = m.get("memory", {})
        lines.append(f"| {m['label']} | {m['parameters']:,} | {m['forward_flops'] / 1e9:.2f} | "
                     f"{_f(mem.get('train_peak_delta_mb'), 1)} | {_f(mem.get('infer_peak_delta_mb'), 1)} |")
    lines.append("")
    lines += _sentence("Ceiling at the start of the run: ", [
        f"{k} matmul {c['n']}x{c['n']}: {c['tflops_median'] * 1e3:,.1f} GFLOP/s median, "
        f"{c['tflops_best'] * 1e3:,.1f} best" for k, c in result.get("ceiling", {}).items()])
    lines += _sentence("Ceiling sampled inside the timed rounds (the MFU denominator): ", [
        f"{v}: {c['train_rounds_tflops'] * 1e3:,.1f} GFLOP/s (training rounds), "
        f"{c['infer_rounds_tflops'] * 1e3:,.1f} (inference rounds)"
        for v, c in result.get("variant_ceilings", {}).items()])
    return lines


def _variant_names(models: dict[str, Any]) -> list[str]:
    """Every variant measured, in the order of the run."""
    return list(dict.fromkeys(v for m in models.values() for v in m["variants"]))


def _throughput(result: dict[str, Any]) -> list[str]:
    models = result["models"]
    variant_names = _variant_names(models)
    if not variant_names:
        return []
    lines = ["## Throughput", "",
             "| variant | network | train img/s | train MFU | inference img/s | inference MFU | latency 1 slice (ms) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for v in variant_names:
        for m in models.values():
            r = m["variants"].get(v)
            if r:
                lines.append(f"| {v} | {m['label']} | {r['train_images_per_s']:.2f} | {100 * r['train_mfu']:.1f} % | "
                             f"{r['infer_images_per_s']:.2f} | {100 * r['infer_mfu']:.1f} % | {r['latency_ms']:.1f} |")
    return lines + [""]


def _ratios(result: dict[str, Any]) -> list[str]:
    ratios = result.get("ratios", {})
    if not ratios:
        return []
    lines = ["## AttentionResUNet vs MONAI AttentionUnet (same run, matched width)", "",
             "| variant | train throughput ratio (target ≥ 1.3) | inference throughput ratio | latency ratio (target ≤ 1) |",
             "|---|---:|---:|---:|"]
    for v, r in ratios.items():
        lines.append(f"| {v} | {r['train_throughput_ratio_paired']:.2f} ({r['train_throughput_ratio']:.2f}) | "
                     f"{r['infer_throughput_ratio_paired']:.2f} ({r['infer_throughput_ratio']:.2f}) | "
                     f"{r['latency_ratio_paired']:.2f} ({r['latency_ratio']:.2f}) |")
    return lines + ["", "Each ratio is the median over the interleaved rounds of the per-round ratio (the models ran"
                    " back to back, so load changes cancel); in brackets the ratio of the medians.", ""]


def _training_step(result: dict[str, Any]) -> list[str]:
    step = result.get("training_step")
    if not step:
        return []
    target = next((m["target_share"] for m in step["models"].values()), 0.10)
    lines = ["## Training step (patches)", "",
             f"| network | patches/s, whole step (a) | patches/s, fixed batch (b) | outside the network c / a "
             f"(target < {100 * target:.0f} %) | (a − b) / a | met |",
             "|---|---:|---:|---:|---:|---|"]
    for m in step["models"].values():
        lines.append(f"| {m['label']} | {m['train_patches_per_s']:,.2f} | {m['fixed_batch_patches_per_s']:,.2f} | "
                     f"{100 * m['share_outside_network']:.1f} % | {100 * m['share_outside_network_difference']:.1f} % |"
                     f" {'yes' if m['target_met'] else '**no**'} |")
    layout = ", channels_last" if step.get("channels_last") else ""
    return lines + ["", f"{step['patch_size']}x{step['patch_size']} patches, batch {step['batch']}, "
                    f"{step['precision']}{layout}, from {step['slices']} preprocessed slices; (c) the sampler alone"
                    f" (plan + render): {step['sampler']['patches_per_s']:,.1f} patches/s. {step['what']}.", ""]


def _pipeline(result: dict[str, Any]) -> list[str]:
    rows = []
    if "phantom_generation" in result:
        g = result["phantom_generation"]
        rows.append(f"| phantom generation ({g['patients']} patients, {g['slices']} slices) | {g['slices_per_s']:.1f} slices/s |")
    if "crf" in result:
        c = result["crf"]
        rows.append(f"| dense CRF, one {c['image_size'][0]}x{c['image_size'][1]} slice | {c['ms_per_slice']:.1f} ms |")
        rows.append(f"| dense CRF `refine_batch`, {c['batch_slices']} slices, {c['batch_parallel_workers']} workers | "
                    f"{c['batch_parallel_slices_per_s']:.1f} slices/s ({c['parallel_speedup']:.2f}x serial) |")
    if "data_pipeline" in result:
        d = result["data_pipeline"]
        for s in d["stages"].values():
            head = f" ({s['headroom_over_training']:.1f}x training's rate)" if "headroom_over_training" in s else ""
            rate = f"{s['patches_per_s']:,.1f} patches/s" if "patches_per_s" in s else f"{s['slices_per_s']:,.1f} slices/s"
            rows.append(f"| data: {s['what']} | {rate}{head} |")
        if d.get("training_consumes_slices_per_s"):
            rows.append(f"| training consumes (AttentionResUNet, fastest variant) | "
                        f"{d['training_consumes_slices_per_s']:.2f} slices/s |")
        if d.get("training_consumes_patches_per_s"):
            rows.append(f"| training consumes (AttentionResUNet, fixed-batch step of the training-step table) | "
                        f"{d['training_consumes_patches_per_s']:.2f} patches/s |")
    if "series_prediction" in result:
        p = result["series_prediction"]
        for precision, r in p.get("precisions", {"": p}).items():
            flag = f" --precision {precision}" if precision else ""
            rows.append(f"| `lungseg predict --crf{flag}`, {p['slices']}-slice {p['image_size']}² DICOM series"
                        f" (target < 60 s) | {r['seconds_with_crf']:.1f} s |")
        agree = p.get("bf16_vs_fp32")
        if agree:
            rows.append(f"| bf16 vs fp32 masks of that series ({agree['weights']}) | "
                        f"{100 * agree['voxels_differing_fraction']:.4f} % of voxels differ, mask Dice "
                        f"{agree['mask_dice']:.4f} |")
    real = result.get("real_series_prediction", {})
    if "seconds_with_crf" in real:
        rows.append(f"| `lungseg predict`, real {real['slices']}-slice {real['shape'][1]}×{real['shape'][2]} DICOM series"
                    f" (LIDC-IDRI-0314; reading it alone {real['read_seconds']:.1f} s) | {real['seconds']:.1f} s |")
        numerics = f", {real['precision']}" if "precision" in real else ""
        rows.append(f"| `lungseg predict --crf`, the same series{numerics} (target ≤ {real['goal_seconds_with_crf']:.0f} s on CPU)"
                    f" | {real['seconds_with_crf']:.1f} s |")
    for key, what in (("published_model", "published model"), ("real_ct_model", "real-CT model")):
        trained = real.get(key)
        if trained:
            rows.append(f"| `lungseg predict`, the same series, {what} `{trained['run']}` | {trained['seconds']:.1f} s |")
            numerics = f", {trained['precision']}" if "precision" in trained else ""
            rows.append(f"| `lungseg predict --crf`, the same series and model{numerics} (the CRF adds"
                        f" {100 * trained['crf_share']:.0f} %; target ≤ 30 %) | {trained['seconds_with_crf']:.1f} s |")
            if "seconds_with_crf_fp32" in trained:
                rows.append(f"| `lungseg predict --crf --precision fp32`, the same series and model"
                            f" | {trained['seconds_with_crf_fp32']:.1f} s |")
    return ["## Pipeline", "", "| stage | rate |", "|---|---:|", *rows, ""] if rows else []


def write_markdown(result: dict[str, Any]) -> str:
    """The benchmark as markdown tables (the book's performance appendix includes this text)."""
    lines = [*_header(result), *_networks(result), *_throughput(result), *_ratios(result), *_training_step(result),
             *_pipeline(result)]
    lines += [f"Note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------
# chart
# ---------------------------------------------------------------------------------------------------------------
def plot_bench(result: dict[str, Any]) -> Any:
    """Training throughput and single-slice latency of every network under every variant, side by side.

    Returns:
        A :class:`matplotlib.figure.Figure` (drawn without pyplot, so no display backend is needed), or
        ``None`` when the run measured no models.
    """
    from matplotlib.figure import Figure

    models = {k: m for k, m in result["models"].items() if m.get("variants")}
    if not models:
        return None
    variants = _variant_names(models)
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / len(models)
    x = np.arange(len(variants))
    panels = (("train_images_per_s", "training, images/s (higher is faster)"),
              ("latency_ms", "one-slice latency, ms (lower is faster)"))
    for ax, (key, title) in zip(axes, panels):
        for i, m in enumerate(models.values()):
            values = [m["variants"].get(v, {}).get(key, np.nan) for v in variants]
            bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=m["label"])
            ax.bar_label(bars, fmt="%.2f" if key != "latency_ms" else "%.0f", fontsize=7, padding=1)
        ax.set_xticks(x, variants, rotation=15, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room for the bar labels
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(models), fontsize=8)
    size = result["config"]["image_size"]
    fig.suptitle(f"lungseg bench on {result['device']}: {size}x{size}, width {result['config']['base_channels']}"
                 f"{' (quick: numbers not meaningful)' if result.get('quick') else ''}", fontsize=11)
    return fig


def write_outputs(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``bench.json``, ``bench.md`` and (when models were measured) ``bench.png`` to ``out_dir``
    (created), each atomically; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(json_safe(result), indent=1) + "\n")
    atomic_write_text(out / "bench.md", write_markdown(result))
    fig = plot_bench(result)
    if fig is not None:
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=120)
        atomic_write_bytes(out / "bench.png", png.getvalue())
    return out
