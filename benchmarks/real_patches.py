#!/usr/bin/env python
"""Do lungseg's training defaults learn real CT? A patient-level cross-validation against plain MONAI.

Data: the 130 real 48×48 lung-tumour patches (13 MSD Task06 patients, 2 mm, intensities in [0, 1]) in
``../shared/realct/msd-task06-2mm-patches/patches_13_patients.h5``. The file stores no patient ids;
the patches come in 13 runs of 10 whose tumour sizes agree within a run and jump between runs, so
patient ``k`` is taken to be patches ``10k … 10k+9`` (an inference from the data, stated in the output).

For each fold, three or more patients are held out; both methods train on the others' patches and
are scored by pooled Dice (threshold 0.5) on the held-out patients' patches, which neither has seen:

* **lungseg defaults** — exactly ``lungseg train --data train.npz --model attention --epochs 40``
  on an ``.npz`` *without* patient ids, as a user would convert the file (lungseg then warns that its
  validation split is by image; the score here is on held-out patients, so that affects only the
  choice of checkpoint);
* **MONAI script** — the 30-line baseline of issue 11: ``AttentionUnet`` (channels 16–128, strides 2),
  ``DiceFocalLoss(sigmoid=True)``, Adam 1e-3, random flips, batch 16, 40 epochs, all training patches.

Usage: ``python benchmarks/real_patches.py [--folds N] [--seeds 0 1 2] [--workers 2] [--out results/real-patches]``. Needs h5py
and MONAI (``pip install h5py monai``); a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT.parent / "shared" / "realct" / "msd-task06-2mm-patches" / "patches_13_patients.h5"
PER_PATIENT = 10
#: Held-out patients of each fold (13 patients: every patient is held out once).
FOLDS: tuple[tuple[int, ...], ...] = ((0, 5, 10), (1, 6, 11), (2, 7, 12), (3, 8, 4), (9,))


def load_patches(path: Path = PATCHES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images (N, 48, 48) float32, masks uint8, inferred patient index)``."""
    import h5py

    with h5py.File(path, "r") as fh:
        images = np.asarray(fh["images"][:, 0], dtype=np.float32)
        masks = (np.asarray(fh["labels"][:, 0]) > 0.5).astype(np.uint8)
    return images, masks, np.arange(len(images)) // PER_PATIENT


def pooled_dice(pred: np.ndarray, target: np.ndarray) -> float:
    from lungseg.metrics import confusion

    return confusion(pred.astype(bool), target.astype(bool)).dice


def monai_script(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int, epochs: int = 40,
                 batch: int = 16, make_net: Any = None, loss_fn: Any = None) -> np.ndarray:
    """The plain MONAI baseline; returns binary predictions for ``test_x``. ``make_net`` (a
    function, called after seeding) and ``loss_fn`` replace its network and loss
    (``benchmarks/real_patches_parts.py``)."""
    import torch
    from monai.losses import DiceFocalLoss
    from monai.networks.nets import AttentionUnet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if make_net is None:
        net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128), strides=(2, 2, 2))
    else:
        net = make_net()
    if loss_fn is None:
        loss_fn = DiceFocalLoss(sigmoid=True)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x_all, y_all = torch.from_numpy(train_x[:, None]), torch.from_numpy(train_y[:, None].astype(np.float32))
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(x_all))
        for i in range(0, len(order), batch):
            x, y = x_all[order[i : i + batch]], y_all[order[i : i + batch]]
            if rng.random() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            if rng.random() < 0.5:
                x, y = x.flip(-2), y.flip(-2)
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return (torch.sigmoid(net(torch.from_numpy(test_x[:, None]))) > 0.5).numpy()[:, 0]


def lungseg_defaults(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int, work: Path,
                     extra_args: Sequence[str] = ()) -> np.ndarray:
    """``lungseg train --data train.npz --model attention --epochs 40 [extra_args]`` then ``lungseg predict``."""
    np.savez(work / "train.npz", images=train_x, masks=train_y, intensity="unit")
    np.savez(work / "test.npz", images=test_x, intensity="unit")
    cli = [sys.executable, "-m", "lungseg"]
    subprocess.run([*cli, "train", "--data", str(work / "train.npz"), "--model", "attention", "--epochs", "40",
                    "--seed", str(seed), "--out", str(work / "run"), "--device", "cpu", "--quiet", *extra_args],
                   check=True, capture_output=True)
    subprocess.run([*cli, "predict", str(work / "test.npz"), "--run", str(work / "run"), "--out",
                    str(work / "pred.npz"), "--device", "cpu", "--quiet"], check=True, capture_output=True)
    with np.load(work / "pred.npz") as z:
        return z["masks"]


def run_fold(k: int, held_out: tuple[int, ...], extra_args: Sequence[str] = (), monai: bool = True,
             seed: int | None = None) -> dict[str, Any]:
    """One fold: both methods trained on the other patients with ``seed`` (default ``k``), scored on ``held_out``."""
    seed = k if seed is None else seed
    images, masks, patient = load_patches()
    test = np.isin(patient, held_out)
    train_x, train_y, test_x, test_y = images[~test], masks[~test], images[test], masks[test]
    row: dict[str, Any] = {"fold": k, "seed": seed, "held_out_patients": list(held_out), "test_patches": int(test.sum())}
    with tempfile.TemporaryDirectory(prefix="lungseg-real-") as tmp:
        t0 = time.time()
        row["lungseg_dice"] = pooled_dice(lungseg_defaults(train_x, train_y, test_x, seed, Path(tmp), extra_args), test_y)
        row["lungseg_s"] = round(time.time() - t0, 1)
    if monai:
        t0 = time.time()
        row["monai_dice"] = pooled_dice(monai_script(train_x, train_y, test_x, seed), test_y)
        row["monai_s"] = round(time.time() - t0, 1)
    return row


def compare(folds: int = len(FOLDS), extra_args: Sequence[str] = (), workers: int = 1,
            monai_from: dict[str, Any] | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Every fold and seed (``workers`` side by side, one thread each); ``seeds`` ``None``: seed ``k``
    for fold ``k``; ``monai_from``: reuse the MONAI scores of an earlier comparison (same folds and
    seeds) instead of training it again."""
    from lungseg.experiment.workers import map_in_workers

    per_fold = [None] if seeds is None else list(seeds)
    jobs = [(k, held_out, tuple(extra_args), monai_from is None, seed)
            for seed in per_fold for k, held_out in enumerate(FOLDS[:folds])]
    if workers > 1:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))  # the lungseg subprocesses
    rows = map_in_workers(run_fold, jobs, workers, progress=False)
    for row in rows:
        if monai_from is not None:
            old = next(r for r in monai_from["folds"] if r["fold"] == row["fold"] and r.get("seed", r["fold"]) == row["seed"])
            row["monai_dice"], row["monai_s"] = old["monai_dice"], old.get("monai_s")
        print(f"fold {row['fold']} seed {row['seed']} {row['held_out_patients']}: lungseg {row['lungseg_dice']:.3f}"
              f" ({row['lungseg_s']} s), MONAI {row['monai_dice']:.3f}", flush=True)
    lungseg, monai = (np.array([r[key] for r in rows]) for key in ("lungseg_dice", "monai_dice"))
    fold_means = {key: [float(np.mean([r[key] for r in rows if r["fold"] == k])) for k in range(folds)]
                  for key in ("lungseg_dice", "monai_dice")}
    return {
        "folds": rows,
        "mean": {"lungseg_defaults": float(lungseg.mean()), "monai_script": float(monai.mean()),
                 "difference": float((lungseg - monai).mean()),
                 "lungseg_at_least_as_good_in_runs": int((lungseg >= monai).sum()), "runs": len(rows),
                 "lungseg_at_least_as_good_in_folds": int(sum(a >= b for a, b in zip(*fold_means.values())))},
        "fold_means": fold_means,
        "seeds": "seed k for fold k" if seeds is None else list(seeds),
        "lungseg_command": "lungseg train --data train.npz --model attention --epochs 40 --seed <seed> "
                           + " ".join(extra_args),
        "data": str(PATCHES.relative_to(ROOT.parent)),
        "patients": f"inferred: patches 10k..10k+9 are patient k (13 patients); {folds} folds",
        "metric": "pooled Dice over the held-out patients' patches, threshold 0.5",
    }


def markdown(result: dict[str, Any]) -> str:
    lines = ["| fold | seed | held-out patients | lungseg defaults | MONAI script |", "|---|---|---|---:|---:|"]
    for r in result["folds"]:
        lines.append(f"| {r['fold']} | {r.get('seed', r['fold'])} | {r['held_out_patients']} | {r['lungseg_dice']:.3f}"
                     f" | {r['monai_dice']:.3f} |")
    m = result["mean"]
    lines.append(f"| mean | | | **{m['lungseg_defaults']:.3f}** | **{m['monai_script']:.3f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=len(FOLDS), help=f"folds to run (default: all {len(FOLDS)})")
    ap.add_argument("--out", default=str(ROOT / "results" / "real-patches"), help="output folder")
    ap.add_argument("--train-args", default="", help="extra `lungseg train` arguments (a candidate default), e.g. '--depth 3'")
    ap.add_argument("--workers", type=int, default=1, help="folds side by side, one process each (default 1)")
    ap.add_argument("--monai-from", default=None, help="comparison.json whose MONAI scores to reuse (same folds and seeds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds, every fold each (default: seed k for fold k, one run per fold)")
    args = ap.parse_args(argv)
    if not PATCHES.is_file():
        print(f"error: {PATCHES} not found: this comparison needs ../shared/realct", file=sys.stderr)
        return 2
    monai_from = json.loads(Path(args.monai_from).read_text()) if args.monai_from else None
    result = compare(args.folds, shlex.split(args.train_args), args.workers, monai_from, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "comparison.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
