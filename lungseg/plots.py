"""Seaborn figures of the statistics: learning curves with seed bands, Figure 3 with every seed's
value, per-patient Dice distributions, paired differences with their intervals, and the CRF's
per-image effect by tumour size; the test tumours against the real training patches' range; and the evaluation
figures of the field: the lesion-level FROC curve,
the reliability diagram of probabilities and the Bland–Altman plot of tumour volumes.

:mod:`lungseg.viz` draws images (slices, contours, attention); this module draws numbers over seeds,
patients and images, where the spread is the point. Every function takes plain tables (a pandas
DataFrame, or mappings that become one), returns the :class:`matplotlib.figure.Figure` it drew on and
computes no metric: the values come from the run folders and the experiment's results (read by
:mod:`lungseg.analysis` and :mod:`lungseg.paper`). Models keep the colours of :data:`lungseg.viz.COLORS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lungseg.viz import COLORS, MODEL_LABELS, metric_order

__all__ = [
    "RUN_NAME",
    "SPREADS",
    "bland_altman_plot",
    "dice_distributions",
    "figure3",
    "froc_curve",
    "history_frame",
    "learning_curves",
    "paired_differences",
    "parse_run_name",
    "reliability_diagram",
    "training_range_plot",
]

#: An experiment's run folder name, ``<model>-<loss>-seed<N>`` (:func:`lungseg.experiment.run_experiment`).
RUN_NAME = re.compile(r"^(?P<model>[A-Za-z0-9_]+)-(?P<loss>[A-Za-z0-9_]+)-seed(?P<seed>\d+)$")

#: The band around the mean over seeds: ``"sd"`` mean ± one standard deviation, ``"range"`` the
#: seeds' minimum to maximum (seaborn's ``("pi", 100)``).
SPREADS: dict[str, Any] = {"sd": "sd", "range": ("pi", 100)}


def parse_run_name(name: str) -> dict[str, Any]:
    """``{"model", "loss", "seed"}`` of a run folder name; a name of another form is its own group
    (``model`` the name, ``loss`` ``""``, ``seed`` 0)."""
    m = RUN_NAME.match(name)
    if m is None:
        return {"model": name, "loss": "", "seed": 0}
    return {"model": m["model"], "loss": m["loss"], "seed": int(m["seed"])}


def _columns(label: str, table: Any) -> Mapping[str, Any]:
    if isinstance(table, Mapping):
        return table
    if isinstance(table, pd.DataFrame):
        return {c: table[c].to_numpy() for c in table.columns}
    raise TypeError(f"history {label!r} must be a DataFrame or a {{column: values}} mapping, got {type(table).__name__}")


def history_frame(histories: Mapping[str, Any], metrics: Sequence[str], x: str = "epoch") -> pd.DataFrame:
    """The long table of training histories: one row per run, epoch and metric.

    Args:
        histories: ``{run name: table}``, a table a DataFrame or ``{column: values per epoch}``
            (:func:`lungseg.analysis.run_histories`); names ``<model>-<loss>-seed<N>`` give the
            model, loss and seed (:func:`parse_run_name`).
        metrics: the columns to keep.
        x: the epoch column (the row number, from 1, when a table has none).

    Returns:
        Columns ``run``, ``model``, ``loss``, ``seed``, ``x`` (named ``x``), ``metric``, ``value``.

    Raises:
        ValueError: ``histories`` or ``metrics`` is empty, or a table lacks one of ``metrics``.
    """
    if not histories:
        raise ValueError("histories is empty")
    if not metrics:
        raise ValueError("metrics is empty: name the history columns to draw")
    frames = []
    for label, table in histories.items():
        cols = _columns(label, table)
        for metric in metrics:
            if metric not in cols:
                raise ValueError(f"history {label!r} has no column {metric!r}; it has {sorted(cols)}")
            y = np.asarray(cols[metric], dtype=np.float64)
            xs = np.asarray(cols[x], dtype=np.float64) if x in cols else np.arange(1, y.size + 1, dtype=np.float64)
            frames.append(pd.DataFrame({"run": label, **parse_run_name(label), x: xs, "metric": metric, "value": y}))
    return pd.concat(frames, ignore_index=True)


def _palette(models: Sequence[str]) -> dict[str, str]:
    fallback = iter(sns.color_palette("colorblind", n_colors=max(len(models), 1)).as_hex())
    return {m: COLORS.get(m) or next(fallback) for m in models}


def learning_curves(histories: Mapping[str, Any], metrics: Sequence[str] = ("train_loss", "val_dice"),
                    x: str = "epoch", spread: str = "sd",
                    best: Mapping[str, tuple[float, float]] | None = None, best_metric: str = "val_dice") -> Figure:
    """Learning curves over seeds: one panel per metric, one line per model × loss (the mean over
    its seeds) with a band for the spread over seeds (none with one seed). At an epoch that some
    seeds' runs did not reach (early stopping), the mean and band are over the seeds that did.

    Args:
        histories: ``{run name: table}`` (see :func:`history_frame`).
        metrics: the history columns, one panel each.
        x: the epoch column.
        spread: the band, a key of :data:`SPREADS`.
        best: optional ``{run name: (epoch, value)}`` drawn as stars on the ``best_metric`` panel
            (each run's selected checkpoint).
        best_metric: the panel of ``best``.

    Raises:
        ValueError: empty ``histories`` or ``metrics``, a missing column, or an unknown ``spread``.
    """
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {sorted(SPREADS)}, got {spread!r}")
    data = history_frame(histories, metrics, x)
    models = list(dict.fromkeys(data["model"]))
    losses = list(dict.fromkeys(data["loss"]))
    palette = _palette(models)
    n_seeds = data.groupby(["model", "loss"])["seed"].nunique()
    errorbar = SPREADS[spread] if n_seeds.max() > 1 else None
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.2), squeeze=False)
    for i, (ax, metric) in enumerate(zip(axes[0], metrics)):
        sns.lineplot(data=data[data["metric"] == metric], x=x, y="value", hue="model", hue_order=models,
                     style="loss" if len(losses) > 1 else None, style_order=losses if len(losses) > 1 else None,
                     palette=palette, errorbar=errorbar, estimator="mean", ax=ax, legend=i == 0,
                     linewidth=1.3)
        if best and metric == best_metric:
            for run, (epoch, value) in best.items():
                if not (np.isfinite(epoch) and np.isfinite(value)):
                    continue
                ax.plot(epoch, value, ls="none", marker="*", ms=9, mec="black", mew=0.5,
                        color=palette.get(parse_run_name(run)["model"], "black"))
            ax.set_title(f"{metric.replace('_', ' ')} (★ best epoch)", fontsize=9)
        else:
            ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_ylabel("")
        ax.grid(alpha=0.3)
    band = "mean ± SD" if spread == "sd" else "mean, min-max"
    fig.suptitle(f"{band} over {n_seeds.min()}-{n_seeds.max()} seeds" if n_seeds.max() > n_seeds.min()
                 else f"{band} over {n_seeds.max()} seed(s)" if n_seeds.max() > 1 else "one seed per model × loss: no band",
                 fontsize=9)
    legend = axes[0][0].get_legend()
    if legend is not None:
        handles, labels = axes[0][0].get_legend_handles_labels()
        legend.remove()
        labels = [MODEL_LABELS.get(label, label) for label in labels]
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(labels), 8),
                   bbox_to_anchor=(0.5, -0.02), frameon=False)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout()
    return fig


def figure3(values: Mapping[str, Mapping[str, Any]], seed_values: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
            paper: Mapping[str, Mapping[str, float]] | None = None, title: str | None = None,
            ylim: tuple[float, float] | None = (0.0, 1.0)) -> Figure:
    """The paper's Figure 3 as a seaborn bar chart: one group per metric, one bar per model (the mean
    over seeds), the experiment's 95 % interval as error bars, every seed's value as a dot, and the
    paper's printed values as black diamonds.

    Args:
        values: ``{model: {metric: (mean, low, high) or mean}}`` (:func:`lungseg.paper.figure3_values`).
        seed_values: ``{model: {metric: [value per seed]}}`` (:func:`lungseg.paper.figure3_seed_values`).
        paper: ``{model: {metric: value}}``, the paper's claims.
        title: the axes title.
        ylim: the value axis range.

    Raises:
        ValueError: ``values`` is empty, a value is neither a number nor ``(mean, low, high)``, or an
            interval does not contain its mean.
    """
    if not values:
        raise ValueError("values is empty")
    models = list(values)
    metrics = metric_order(values)
    rows = []
    for model in models:
        for metric in metrics:
            v = values[model].get(metric, math.nan)
            if isinstance(v, (int, float, np.floating)):
                mean, lo, hi = float(v), math.nan, math.nan
            else:
                if len(v) != 3:
                    raise ValueError(f"values[{model!r}][{metric!r}] must be a number or (mean, low, high), got {v!r}")
                mean, lo, hi = (math.nan if t is None else float(t) for t in v)
                if not (math.isnan(mean) or (lo <= mean + 1e-12 and mean <= hi + 1e-12)):
                    raise ValueError(f"values[{model!r}][{metric!r}]: CI ({lo}, {hi}) does not contain the mean {mean}")
            rows.append({"model": model, "metric": metric, "mean": mean, "low": lo, "high": hi})
    table = pd.DataFrame(rows)
    palette = _palette(models)
    fig, ax = plt.subplots(figsize=(1.6 + 1.45 * len(metrics), 3.8))
    sns.barplot(data=table, x="metric", y="mean", hue="model", order=metrics, hue_order=models, palette=palette,
                errorbar=None, edgecolor="black", linewidth=0.5, ax=ax)
    # the bars' centres, per model (one container per hue level, one patch per metric)
    centres = {model: [p.get_x() + p.get_width() / 2 for p in container.patches]
               for model, container in zip(models, ax.containers)}
    for model in models:
        sub = table[table["model"] == model].set_index("metric").loc[metrics]
        xs = np.asarray(centres[model])
        has_ci = sub["low"].notna().to_numpy()
        if has_ci.any():
            ax.errorbar(xs[has_ci], sub["mean"].to_numpy()[has_ci],
                        yerr=[(sub["mean"] - sub["low"]).to_numpy()[has_ci], (sub["high"] - sub["mean"]).to_numpy()[has_ci]],
                        fmt="none", ecolor="black", elinewidth=1.0, capsize=3, zorder=3)
        if seed_values and model in seed_values:
            for x0, metric in zip(xs, metrics):
                pts = np.asarray([v for v in seed_values[model].get(metric, []) if v is not None], dtype=np.float64)
                if pts.size:
                    jitter = np.linspace(-0.06, 0.06, pts.size) if pts.size > 1 else np.zeros(1)
                    ax.scatter(x0 + jitter, pts, s=12, color="white", edgecolor="black", linewidth=0.6, zorder=4,
                               label="one seed" if model == models[0] and metric == metrics[0] else None)
        if paper and model in paper:
            pv = np.asarray([paper[model].get(metric, np.nan) for metric in metrics], dtype=np.float64)
            ax.scatter(xs, pv, marker="D", s=24, color=COLORS["paper"], zorder=5,
                       label="paper's claim" if model == models[0] else None)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [MODEL_LABELS.get(label, label) for label in labels], fontsize=7)
    ax.set_xlabel("")
    ax.set_ylabel("score")
    ax.tick_params(axis="x", labelsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _frame(rows: Any, required: Sequence[str], name: str) -> pd.DataFrame:
    table = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if table.empty:
        raise ValueError(f"{name}: no rows")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: the rows lack the columns {missing}; they have {sorted(table.columns)}")
    return table


def dice_distributions(rows: Any, x: str = "loss", hue: str = "model", value: str = "dice",
                       title: str | None = None) -> Figure:
    """Per-patient (or per-image) Dice as distributions: a box per ``x`` × ``hue`` group and every
    value as a dot (seeds pooled; one dot per patient and seed).

    Args:
        rows: a DataFrame or a list of dicts with the columns ``x``, ``hue`` and ``value``
            (:func:`lungseg.analysis.per_patient_dice`).

    Raises:
        ValueError: no rows, or a missing column.
    """
    table = _frame(rows, (x, hue, value), "dice_distributions")
    table = table[table[value].notna()]
    if table.empty:
        raise ValueError(f"dice_distributions: every {value!r} is undefined")
    hues = list(dict.fromkeys(table[hue]))
    order = list(dict.fromkeys(table[x]))
    palette = _palette(hues)
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(order), 3.6))
    sns.boxplot(data=table, x=x, y=value, hue=hue, order=order, hue_order=hues, palette=palette, fliersize=0,
                boxprops={"alpha": 0.45}, linewidth=0.8, ax=ax)
    sns.stripplot(data=table, x=x, y=value, hue=hue, order=order, hue_order=hues, palette=palette, dodge=True,
                  size=3, edgecolor="black", linewidth=0.3, jitter=0.2, legend=False, ax=ax)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, [MODEL_LABELS.get(label, label) for label in labels], fontsize=7, title=None)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(value.replace("_", " "))
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def paired_differences(rows: Any, metric: str = "Dice", title: str | None = None) -> Figure:
    """Paired differences between the grid's cells (``b - a`` on the same seeds): the mean with its
    interval as a horizontal error bar, every seed's difference as a dot, and zero as a line.

    Args:
        rows: a DataFrame or list of dicts with ``label`` (what is compared), ``mean``, ``low``,
            ``high`` (the interval; NaN when there is none) and ``values`` (the per-seed
            differences), optionally ``factor`` (colour) (:func:`lungseg.analysis.paired_difference_rows`).
        metric: the name of the differenced metric, for the axis label.

    Raises:
        ValueError: no rows, or a missing column.
    """
    table = _frame(rows, ("label", "mean", "low", "high", "values"), "paired_differences").reset_index(drop=True)
    if "factor" not in table.columns:
        table["factor"] = "difference"
    factors = list(dict.fromkeys(table["factor"]))
    palette = dict(zip(factors, sns.color_palette("colorblind", n_colors=len(factors)).as_hex()))
    points = table[["label", "factor", "values"]].explode("values").dropna(subset=["values"])
    points["values"] = points["values"].astype(np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.32 * len(table)))
    labels = list(table["label"])
    if not points.empty:
        sns.stripplot(data=points, y="label", x="values", hue="factor", order=labels, hue_order=factors,
                      palette=palette, size=3.5, jitter=0.12, alpha=0.7, legend=False, ax=ax)
    for i, r in table.iterrows():
        color = palette[r["factor"]]
        if np.isfinite(r["low"]) and np.isfinite(r["high"]):
            ax.errorbar(r["mean"], i, xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="o", color=color,
                        mec="black", mew=0.5, ms=5, capsize=3, elinewidth=1.2, zorder=3)
        else:
            ax.plot(r["mean"], i, "o", color=color, mec="black", mew=0.5, ms=5, zorder=3)
    ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("")
    ax.set_xlabel(f"difference in {metric} (b - a), mean and 95 % interval; dots: seeds")
    ax.grid(axis="x", alpha=0.3)
    if len(factors) > 1:
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([0], [0], marker="o", ls="none", color=palette[f], label=f) for f in factors],
                  fontsize=7, title="factor", title_fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _keys(curve: Mapping[str, Any], keys: Sequence[str], name: str) -> None:
    missing = [k for k in keys if k not in curve]
    if missing:
        raise ValueError(f"{name}: missing {missing}; expected the dict of lungseg.metrics.{name.split()[0]}")


def froc_curve(curves: Mapping[str, Mapping[str, Any]], ax: Any | None = None, title: str | None = None) -> Figure:
    """Lesion-level FROC curves: sensitivity against false positives per scan, one line per curve, its
    points joined in the order of the thresholds.

    Args:
        curves: ``{label: froc result}``, each the dict of :func:`lungseg.metrics.froc` (``fp_per_scan``,
            ``sensitivity``, ``n_lesions``); the label's colour is :data:`lungseg.viz.COLORS`'s when it
            names a model or ``"crf"``.
        ax: axes to draw into (default: a new figure).
        title: figure title.
    """
    fig, ax = plt.subplots(figsize=(5.0, 3.6)) if ax is None else (ax.figure, ax)
    fallback = iter(sns.color_palette("colorblind").as_hex())
    for label, curve in curves.items():
        _keys(curve, ("fp_per_scan", "sensitivity", "n_lesions"), f"froc ({label})")
        # joined in threshold order: false positives need not fall as the threshold rises (a component
        # can split in two), so sorting the points by false positives would draw a curve that was never measured
        ax.plot(curve["fp_per_scan"], curve["sensitivity"], "o-", ms=3,
                color=COLORS.get(label) or next(fallback), label=f"{MODEL_LABELS.get(label, label)} ({curve['n_lesions']} lesions)")
    # zero false positives is a point of the curve: a linear scale near 0, logarithmic beyond one per scan
    ax.set_xscale("symlog", linthresh=1.0)
    most = max((max(c["fp_per_scan"], default=0.0) for c in curves.values()), default=1.0)
    ticks = [0.0] + [2.0 ** k for k in range(-1, int(np.ceil(np.log2(max(most, 1.0)))) + 1)]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set(xlabel="false positives per scan", ylabel="lesion sensitivity", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def reliability_diagram(curves: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Figure:
    """Reliability diagram: observed tumour share against mean probability per bin, with the diagonal
    of perfect calibration, and below it the pixels per bin (log scale).

    Args:
        curves: ``{label: reliability result}``, each the dict of :func:`lungseg.metrics.reliability`
            (``mean_probability``, ``observed``, ``count``, ``ece``); the legend quotes each ECE.
        title: figure title.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.8, 5.0), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], ls="--", color="0.5", lw=0.8, label="perfect calibration")
    fallback = iter(sns.color_palette("colorblind").as_hex())
    for label, curve in curves.items():
        _keys(curve, ("mean_probability", "observed", "count", "ece"), f"reliability ({label})")
        color = COLORS.get(label) or next(fallback)
        top.plot(curve["mean_probability"], curve["observed"], "o-", ms=4, color=color,
                 label=f"{MODEL_LABELS.get(label, label)}: ECE {curve['ece']:.4f}")
        bottom.plot(curve["mean_probability"], curve["count"], "o", ms=3, color=color)
    top.set(ylabel="observed tumour share", xlim=(0, 1), ylim=(0, 1))
    top.legend(fontsize=7, loc="upper left")
    top.grid(alpha=0.3)
    bottom.set(xlabel="mean predicted probability (bin)", ylabel="pixels", yscale="log")
    bottom.grid(alpha=0.3)
    if title:
        top.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def bland_altman_plot(result: Mapping[str, Any], unit: str = "mL", labels: Sequence[str] | None = None,
                      ax: Any | None = None, title: str | None = None) -> Figure:
    """Bland–Altman plot: difference (prediction - reference) against the mean of the two, per case, with
    the bias and the limits of agreement as lines.

    Args:
        result: the dict of :func:`lungseg.metrics.bland_altman`.
        unit: unit of the measurement, for the axes.
        labels: one name per case, written beside its point.
        ax: axes to draw into (default: a new figure).
        title: figure title.
    """
    _keys(result, ("mean", "difference", "bias", "limits", "level"), "bland_altman")
    fig, ax = plt.subplots(figsize=(5.0, 3.6)) if ax is None else (ax.figure, ax)
    ax.scatter(result["mean"], result["difference"], s=18, color=COLORS["attention"], edgecolor="black", lw=0.4, zorder=3)
    for name, x, y in zip(labels or (), result["mean"], result["difference"]):
        ax.annotate(str(name), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(result["bias"], color="black", lw=1, label=f"bias {result['bias']:+.2f} {unit}")
    low, high = result["limits"]
    if np.isfinite(low) and np.isfinite(high):
        for value in (low, high):
            ax.axhline(value, color="0.4", lw=0.8, ls="--")
        ax.axhspan(low, high, color="0.9", zorder=0,
                   label=f"{result['level']:.0%} limits of agreement [{low:+.2f}, {high:+.2f}] {unit}")
    ax.axhline(0.0, color="0.6", lw=0.6, ls=":")
    ax.set(xlabel=f"mean of prediction and reference ({unit})", ylabel=f"prediction - reference ({unit})")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_range_plot(record: Mapping[str, Any], title: str | None = None) -> Figure:
    """The real training patches' distinct tumour cross-sections and each test scan's, axial slice by slice:
    size against attachment (left), and the share of each scan slice the model marks against its size (right;
    hollow: the model run on axial slices alone, where the rows carry ``found_axial_only``).

    Args:
        record: the JSON of ``benchmarks/training_range.py`` (``patches``; ``scans``: name to
            ``cross_sections`` rows with ``diameter_mm``, ``attached_share`` and ``found``).
        title: figure title.
    """
    missing = [k for k in ("patches", "scans") if k not in record]
    if missing:
        raise ValueError(f"training_range_plot: missing {missing}; expected the JSON of benchmarks/training_range.py")
    patches = pd.DataFrame([r for r in record["patches"] if r.get("repeat_of") is None])  # each distinct one once
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    left.scatter(patches["diameter_mm"], patches["attached_share"], s=14, color="0.65", edgecolor="none",
                 label=f"training cross-sections ({len(patches)} distinct)")
    widest = patches["diameter_mm"].max()
    styles = (("o", "tab:blue"), ("s", "tab:orange"), ("^", "tab:green"), ("D", "tab:purple"))
    for (name, scan), (marker, colour) in zip(record["scans"].items(), styles):
        rows = pd.DataFrame(scan["cross_sections"])
        left.scatter(rows["diameter_mm"], rows["attached_share"], s=22, marker=marker, color=colour, edgecolor="black",
                     lw=0.4, label=f"{name} ({len(rows)} slices)", zorder=3)
        if "found" in rows:
            right.plot(rows["diameter_mm"], rows["found"], marker=marker, ls="none", color=colour, mec="black", mew=0.4,
                       label=f"{name}, three planes")
            if "found_axial_only" in rows:
                right.plot(rows["diameter_mm"], rows["found_axial_only"], marker=marker, ls="none", mfc="none",
                           mec=colour, mew=1.0, label=f"{name}, axial slices alone")
    for ax in (left, right):
        ax.axvline(widest, color="0.3", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
        ax.set_xlabel("cross-section: equivalent diameter (mm)")
    left.annotate("widest in training", (widest, 0.97), fontsize=7, ha="right", va="top",
                  xytext=(-3, 0), textcoords="offset points")
    left.set(ylabel="rim against tissue as bright (share)", ylim=(-0.03, 1.0))
    right.set(ylabel="tumour the model marks (share)", ylim=(-0.03, 1.03))
    left.legend(fontsize=7, loc="upper left")
    right.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
