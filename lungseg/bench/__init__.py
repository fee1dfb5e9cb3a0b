"""``lungseg bench``: speed, cost and memory of the networks and the pipeline, measured side by side in one run.

What one run measures (all in the same process, on the same device, with the same threads):

* for :class:`~lungseg.models.UNet`, :class:`~lungseg.models.AttentionResUNet` (the paper's configuration,
  ``base_channels=32, depth=4``) and MONAI's ``AttentionUnet`` at matched widths
  (``channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2)``): parameters, forward FLOPs per image
  (``torch.utils.flop_counter``), training throughput (images/s of forward + hybrid loss (eq. 9) +
  backward + Adam step, train mode), inference throughput and single-slice latency
  (``torch.inference_mode``, eval mode) and peak memory;
* the machine's ceiling, a large matrix product in the same dtype, and from it the model FLOPs
  utilisation (MFU) ``achieved FLOP/s / ceiling`` with training FLOPs taken as 3x forward (backward ~ 2x);
* dense-CRF (eq. 10) milliseconds per slice and the parallel :func:`lungseg.crf.refine_batch` rate;
* the whole training step of ``lungseg train`` (patch sampling + augmentation + forward + loss +
  backward + Adam) in patches/s for lungseg's networks, and the share of it spent outside the network
  (target < 10 %);
* data pipeline rates (DICOM series read, slice dataset built from DICOM, loaded from the cache, and
  training batches drawn and rendered by the patch sampler: patches/s and whole slices/s) against the
  rate at which training consumes them;
* phantom generation slices/s, and the wall time of ``lungseg predict --crf`` on a 100-slice series;
* the wall time of ``lungseg predict`` with and without ``--crf`` on the real 275-slice 512² LIDC-IDRI-0314
  series (CPU goal ≤ 30 s with the CRF), where the shared real-CT folder is present (``$LUNGSEG_REALCT``
  or ``shared/realct`` next to the repository; skipped with a note otherwise, and in a quick run).

Timing protocol: ``warmup`` untimed iterations per model, then ``repeats`` timed iterations
*interleaved* across the three models (model A, B, C, A, B, C, ...) so that a change in machine load
hits all of them alike; the median is reported. CUDA timings synchronise before and after. Peak
memory on CPU is the ``ru_maxrss`` increase of a fresh subprocess per model (``tracemalloc`` does not
see torch's allocator); on CUDA ``torch.cuda.max_memory_allocated``.

Variants: on CPU fp32 in each network's own layout, fp32 with ``channels_last`` forced on all, and
bf16 autocast where the CPU has native bf16 (AVX-512 BF16 or AMX), plus ``torch.compile`` of both
dtypes with ``--compile``; on CUDA fp32, bf16 autocast + ``channels_last``, and the same under
``torch.compile`` (cudnn benchmark on). Every variant is applied identically to all three networks.
The end-to-end prediction of a phantom series runs in fp32 and, where fast bf16 exists, in bf16, and
reports how many mask voxels the two disagree on; the real series is timed at ``predict``'s default precision
(bf16 on a CPU with native bf16), the trained models also in fp32 there.

Run ``lungseg bench`` (or ``python -m lungseg.bench``); ``--quick`` is a < 1 minute smoke run on tiny
sizes whose numbers mean nothing.

Layout (imports point downward only: the measurements import the harness and the network list,
never each other; :mod:`~lungseg.bench.run` imports the measurements):

* :mod:`~lungseg.bench.harness`: :class:`BenchConfig`, variants, the timing protocol, threads, the matmul ceiling;
* :mod:`~lungseg.bench.networks`: the compared networks, named by :data:`lungseg.models.MODELS` plus MONAI's reference;
* measurements: :mod:`~lungseg.bench.throughput` (throughput, latency, MFU), :mod:`~lungseg.bench.memory`,
  :mod:`~lungseg.bench.training_step` (the sampled training step), :mod:`~lungseg.bench.pipeline` (data
  pipeline, phantom generation), :mod:`~lungseg.bench.crf`,
  :mod:`~lungseg.bench.prediction` (end-to-end ``predict``);
* :mod:`~lungseg.bench.report`: ``bench.md`` and ``bench.png`` (:func:`write_markdown`, :func:`plot_bench`);
* :mod:`~lungseg.bench.run`: :func:`run_bench`; :mod:`~lungseg.bench.cli`: the flags and :func:`main`.
"""

from __future__ import annotations

from lungseg.bench.cli import add_arguments, main, run_from_args
from lungseg.bench.harness import CUDA_BATCHES, FULL, QUICK, BenchConfig, Variant, matmul_ceiling
from lungseg.bench.networks import MONAI_REFERENCE, NETWORKS, build_bench_model
from lungseg.bench.report import plot_bench, write_markdown
from lungseg.bench.run import SECTIONS, run_bench

__all__ = ["CUDA_BATCHES", "FULL", "MONAI_REFERENCE", "NETWORKS", "QUICK", "SECTIONS", "BenchConfig", "Variant",
           "add_arguments", "build_bench_model", "main", "matmul_ceiling", "plot_bench", "run_bench", "run_from_args",
           "write_markdown"]
