"""Peak memory of inference and training, per network: resident memory on the CPU, allocations on CUDA."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungseg.bench.harness import BenchConfig, sync
from lungseg.bench.networks import build_bench_model
from lungseg.losses import build_loss

__all__ = ["cpu_peak_memory", "cuda_peak_memory"]

_CPU_METHOD = "peak RSS (VmHWM) over the RSS after building model and inputs, fresh subprocess"
_CUDA_METHOD = "torch.cuda.max_memory_allocated above the model's allocation (fp32)"


def _peaks(model: nn.Module, cfg: BenchConfig, device: torch.device, current_mb: Callable[[], float],
           reset_peak: Callable[[], None], peak_mb: Callable[[], float]) -> dict[str, float]:
    """Peak memory above the footprint of model and inputs: one inference batch, then two training steps.

    ``current_mb``, ``reset_peak`` and ``peak_mb`` read the device's memory counter (MB), reset its
    peak to the current value, and read the peak.
    """
    s = cfg.image_size
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss("hybrid")
    x_inf = torch.randn(cfg.infer_batch, 1, s, s, device=device)
    x = torch.randn(cfg.train_batch, 1, s, s, device=device)
    y = (torch.rand(cfg.train_batch, 1, s, s, device=device) > 0.9).float()
    sync(device)
    base = current_mb()
    reset_peak()
    model.eval()
    with torch.inference_mode():
        model(x_inf)
    sync(device)
    infer = peak_mb() - base
    reset_peak()
    model.train()
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    sync(device)
    return {"baseline_mb": base, "infer_peak_delta_mb": infer, "train_peak_delta_mb": peak_mb() - base}


# ---------------------------------------------------------------------------------------------------------------
# CPU: one fresh subprocess per model
# ---------------------------------------------------------------------------------------------------------------
def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(key)


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS (ru_maxrss would be inherited from the parent)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def probe(argv: Sequence[str] | None = None) -> None:
    """The body of one memory subprocess: ``argv[0]`` is ``{"name": ..., "cfg": {...}}`` as JSON; prints
    the result as one JSON line."""
    args = json.loads((sys.argv[1:] if argv is None else argv)[0])
    cfg = BenchConfig(**args["cfg"])
    model = build_bench_model(args["name"], cfg.base_channels, cfg.depth)
    peaks = _peaks(model, cfg, torch.device("cpu"), lambda: _status_mb("VmRSS"), _reset_peak_rss,
                   lambda: _status_mb("VmHWM"))
    print(json.dumps({"baseline_rss_mb": peaks["baseline_mb"], "infer_peak_delta_mb": peaks["infer_peak_delta_mb"],
                      "train_peak_delta_mb": peaks["train_peak_delta_mb"]}))


_PROBE = "from lungseg.bench.memory import probe; probe()"


def cpu_peak_memory(names: Sequence[str], cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    """Peak resident-memory increase of inference and training, one fresh subprocess per model (Linux).

    Each model runs alone in its own interpreter, so freed memory of another model cannot hide its
    peak. The peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` before each phase; Python's
    ``ru_maxrss`` is inherited from the parent process and useless here) minus the RSS after building
    the model and inputs is the activation peak of inference, and the activation + gradient +
    optimiser-state peak of two training steps. The subprocesses run concurrently: memory is per
    process, so sharing the CPU does not change it.
    """
    if not Path("/proc/self/clear_refs").exists():
        return {name: {"error": "peak RSS needs Linux /proc (VmHWM)"} for name in names}
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _PROBE, json.dumps({"name": name, "cfg": asdict(cfg)})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for name in names
    }
    out: dict[str, dict[str, Any]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            out[name] = {"error": f"memory probe exited with {proc.returncode}: {tail}"}
            continue
        out[name] = {**json.loads(stdout.strip().splitlines()[-1]), "method": _CPU_METHOD}
    return out


# ---------------------------------------------------------------------------------------------------------------
# CUDA: the allocator's own peak
# ---------------------------------------------------------------------------------------------------------------
def cuda_peak_memory(models: dict[str, nn.Module], cfg: BenchConfig, device: torch.device) -> dict[str, dict[str, Any]]:
    """``torch.cuda.max_memory_allocated`` above the model's own footprint, fp32, inference then training."""
    out = {}
    for name, base_model in models.items():
        torch.cuda.empty_cache()
        model = copy.deepcopy(base_model).to(device)
        peaks = _peaks(model, cfg, device, lambda: torch.cuda.memory_allocated(device) / 2**20,
                       lambda: torch.cuda.reset_peak_memory_stats(device),
                       lambda: torch.cuda.max_memory_allocated(device) / 2**20)
        out[name] = {"infer_peak_delta_mb": peaks["infer_peak_delta_mb"],
                     "train_peak_delta_mb": peaks["train_peak_delta_mb"], "method": _CUDA_METHOD}
        del model
    return out
