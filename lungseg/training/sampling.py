"""Which training slices each optimisation step sees: a pure function of ``(seed, epoch)``.

The data order of every epoch is drawn from ``(seed, epoch)`` alone, so it is identical after a
resume and on every DDP rank; tumour oversampling draws with replacement from per-slice weights.
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from lungseg.errors import DataError

__all__ = ["FixedBatches", "epoch_batches", "seed_worker", "tumour_weights"]


class FixedBatches(Sampler[list[int]]):
    """A batch sampler over a precomputed list of index batches."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def seed_worker(worker_id: int) -> None:
    """Seed NumPy/Python in a data-loader worker from torch's per-worker seed (itself seeded)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def tumour_weights(tumour: np.ndarray, tumour_fraction: float | None, source: str = "") -> np.ndarray | None:
    """Sampling weights that draw a tumour slice with probability ``tumour_fraction``.

    Args:
        tumour: bool per training slice, True where the slice holds tumour.
        tumour_fraction: wanted share of tumour slices; ``None``: natural frequencies (no weights).
        source: the dataset, for the error message.

    Raises:
        DataError: oversampling is asked for but no training slice holds tumour.
    """
    if tumour_fraction is None:
        return None
    n_t, n_f = int(tumour.sum()), int((~tumour).sum())
    if n_t == 0:
        raise DataError(f"{source}: tumour_fraction={tumour_fraction} but the training split has no tumour slices")
    if n_f == 0 or tumour_fraction == 1.0:
        return tumour.astype(np.float64)
    return np.where(tumour, tumour_fraction / n_t, (1 - tumour_fraction) / n_f)


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    weights: np.ndarray | None = None,
    num_samples: int | None = None,
) -> list[list[int]]:
    """The batches of one epoch for one process.

    The global order is drawn from ``(seed, epoch)`` alone, so it is identical after a resume and
    on every rank: a permutation of the ``n`` samples (the first ``num_samples`` of it, repeated if
    needed), or, with ``weights``, ``num_samples`` draws with replacement (tumour oversampling). An
    incomplete last global batch is dropped when there is at least one full batch (a batch of one
    sample breaks batch norm). Under DDP rank ``r`` takes samples ``r, r + world, ...`` of every
    global batch, so all ranks together see exactly the global batches of a single-process run.

    Returns:
        A list of index lists (the rank's share of each global batch).
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    total = n if num_samples is None else int(num_samples)
    if weights is not None:
        perm = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), total, replacement=True, generator=g).tolist()
    else:
        perm = []
        while len(perm) < total:
            perm += torch.randperm(n, generator=g).tolist()
        perm = perm[:total]
    if total >= batch_size:
        global_batches = [perm[i * batch_size : (i + 1) * batch_size] for i in range(total // batch_size)]
    else:
        global_batches = [perm]
    return [b[rank::world] for b in global_batches]
