"""Independent training runs side by side on one machine: a process pool with one thread pool each.

On a CPU, torch parallelises a small network's convolutions poorly: on the 2-core machine two runs
with one thread each finish about a third sooner than the same two runs one after the other with
two threads each (measured: 18.5 s per epoch for each of two single-thread medium runs side by side,
12.7 s per epoch for one two-thread run). Two runs that each start two threads on two cores are
many times slower, so every worker gets ``cores // workers`` threads and no more.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

__all__ = ["check_workers", "map_in_workers"]


def check_workers(workers: int) -> int:
    """``workers`` when it is a positive integer; raises ``ValueError`` naming the argument otherwise."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return workers


def _limit_threads(threads: int) -> None:
    # Set before torch starts its thread pool in this (spawned) process.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def map_in_workers(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], workers: int = 1,
                   progress: bool = True, desc: str = "runs") -> list[Any]:
    """``[fn(*job) for job in jobs]``, computed by ``workers`` processes when ``workers > 1``.

    Args:
        fn: a module-level function (it is pickled into spawned processes).
        jobs: the argument tuples, one per call.
        workers: processes side by side; 1 runs the calls here, in order.
        progress: a progress bar over finished calls (the calls' own bars are the caller's choice).
        desc: the progress bar's label.

    Returns:
        The results in the order of ``jobs``. The first exception raised by a call is raised here,
        after the calls already running have finished.
    """
    check_workers(workers)
    if workers == 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    from tqdm.auto import tqdm

    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork would copy torch's running thread pool
    results: list[Any] = [None] * len(jobs)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_limit_threads,
                               initargs=(threads,))
    try:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress):
            results[futures[future]] = future.result()
    finally:
        # on an error, calls not yet started are dropped; the running ones finish (a run resumes later)
        pool.shutdown(wait=True, cancel_futures=True)
    return results
